//! SIGHUP, the operator's "read your files again", as one small type each
//! reload loops on (the worker list, the callers' TLS certificates).

use tokio_util::sync::CancellationToken;

/// The SIGHUPs grymd receives until it stops.
pub(crate) struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
    cancel: CancellationToken,
}

impl Hangups {
    /// Listens for SIGHUP until `cancel` fires; `what` names what would
    /// not reload, should the signal be unavailable.
    pub(crate) fn listen(what: &'static str, cancel: CancellationToken) -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup())
                .inspect_err(|error| {
                    tracing::warn!(%error, "cannot listen for SIGHUP; {what} will not reload");
                })
                .ok();
            Self { signal, cancel }
        }
        #[cfg(not(unix))]
        {
            let _ = what;
            Self { cancel }
        }
    }

    /// Waits for the next SIGHUP: `false` once grymd stops (or signals
    /// cannot be had), and then for good.
    pub(crate) async fn next(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            return tokio::select! {
                () = self.cancel.cancelled() => false,
                received = signal.recv() => received.is_some(),
            };
        }
        self.cancel.cancelled().await;
        false
    }
}
