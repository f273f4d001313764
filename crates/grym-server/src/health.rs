//! grymd's `grpc.health.v1`: what each service name means, the loop that
//! keeps the names true, and the drain that turns them all down.
//!
//! Names:
//! - `""` and `grym.orchestrator.v1.Orchestrator`: `SERVING` while grymd can
//!   take work: its store answers its writes and at least one model serves
//!   (with none, no task type can run);
//! - `grym.model/<model_id>`, one per registered model: `SERVING` while any
//!   of its replicas passes its health check, `NOT_SERVING` once every one
//!   fails it, `UNKNOWN` before its first check. A model added or removed by
//!   a SIGHUP reload gains or loses its name at the next look.
//!
//! The loop looks at the registry and the store every [`poll_every`] of the
//! probe interval (at most 100 ms), so a `Watch` hears of a probe's verdict
//! at once: a model that goes down is reported within one probe interval
//! and that look. `Check`
//! of an unknown name is `NOT_FOUND`; `Watch` of one answers
//! `SERVICE_UNKNOWN` and stays open, as the protocol asks, until the name
//! appears.
//!
//! Invariants: the statuses sit behind one std mutex that no await ever
//! holds; a change wakes every `Watch`, which sends only its own name's
//! changes. From [`Health::drain`] on, every name is `NOT_SERVING` for good;
//! [`Health::end`] ends every `Watch` (with `UNAVAILABLE`, which tells a
//! client to look elsewhere), so none keeps grymd from exiting.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::Stream;
use grym_core::{Health as ModelHealth, Orchestrator};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The prefix of a model's service name: `grym.model/<model_id>`.
pub(crate) const MODEL_PREFIX: &str = "grym.model/";

/// The orchestrator service's name, which reports as `""` does.
const ORCHESTRATOR: &str = grym_proto::orchestrator::v1::orchestrator_server::SERVICE_NAME;

/// How often the registry and the store are looked at, for a probe
/// `interval`: a tenth of it, between 10 ms and 100 ms, so a probe's
/// verdict is reported at once, next to the interval. A look that finds
/// nothing changed wakes no one.
pub(crate) fn poll_every(interval: Duration) -> Duration {
    (interval / 10).clamp(Duration::from_millis(10), Duration::from_millis(100))
}

/// The statuses grymd reports, shared by the service and the loop.
#[derive(Clone, Default)]
pub(crate) struct Health(Arc<Shared>);

#[derive(Default)]
struct Shared {
    statuses: Mutex<Statuses>,
    /// Bumped at each change; every `Watch` holds a receiver.
    changed: watch::Sender<()>,
    /// Fires when every `Watch` is to end.
    ended: CancellationToken,
}

#[derive(Default)]
struct Statuses {
    by_name: HashMap<String, ServingStatus>,
    draining: bool,
}

impl Health {
    /// The names as the orchestrator stands now, ready to serve.
    pub(crate) fn new(orchestrator: &Orchestrator) -> Self {
        let health = Self::default();
        health.update(orchestrator);
        health
    }

    /// The `grpc.health.v1.Health` service over these statuses.
    pub(crate) fn service(&self) -> HealthServer<Self> {
        HealthServer::new(self.clone())
    }

    /// Sets every name as the registry and the store say now.
    pub(crate) fn update(&self, orchestrator: &Orchestrator) {
        let registry = orchestrator.registry();
        let mut wanted = HashMap::with_capacity(registry.models().len() + 2);
        let mut serving_models = 0usize;
        for model in registry.models() {
            let status = match model.health() {
                ModelHealth::Serving => {
                    serving_models += 1;
                    ServingStatus::Serving
                }
                ModelHealth::NotServing => ServingStatus::NotServing,
                ModelHealth::Unknown => ServingStatus::Unknown,
            };
            wanted.insert(format!("{MODEL_PREFIX}{}", model.id()), status);
        }
        let store = orchestrator.store_serving();
        let overall = if store && serving_models > 0 {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        wanted.insert(String::new(), overall);
        wanted.insert(ORCHESTRATOR.to_owned(), overall);
        let Some(before) = self.apply(wanted) else {
            return;
        };
        if before == Some(overall) {
            return;
        }
        match (overall, before) {
            (ServingStatus::Serving, None) => {}
            (ServingStatus::Serving, Some(_)) => tracing::info!("grymd serves again"),
            _ if !store => tracing::warn!("grymd reports NOT_SERVING: the store does not answer"),
            _ => tracing::warn!(
                models = registry.models().len(),
                "grymd reports NOT_SERVING: no model serves, so no task type can run"
            ),
        }
    }

    /// Replaces the statuses with `wanted`, waking the watchers if anything
    /// changed; `None` once draining (nothing changes then), else the
    /// overall status before.
    fn apply(&self, wanted: HashMap<String, ServingStatus>) -> Option<Option<ServingStatus>> {
        let mut statuses = self.lock();
        if statuses.draining {
            return None;
        }
        let before = statuses.by_name.get("").copied();
        if statuses.by_name != wanted {
            statuses.by_name = wanted;
            drop(statuses);
            self.0.changed.send_replace(());
        }
        Some(before)
    }

    /// Turns every name `NOT_SERVING` for good: grymd is draining.
    pub(crate) fn drain(&self) {
        let mut statuses = self.lock();
        statuses.draining = true;
        for status in statuses.by_name.values_mut() {
            *status = ServingStatus::NotServing;
        }
        drop(statuses);
        self.0.changed.send_replace(());
    }

    /// Ends every `Watch`, open or still to come.
    pub(crate) fn end(&self) {
        self.0.ended.cancel();
    }

    fn status(&self, name: &str) -> Option<ServingStatus> {
        self.lock().by_name.get(name).copied()
    }

    fn lock(&self) -> MutexGuard<'_, Statuses> {
        self.0
            .statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps the names true until `cancel` fires, looking every
/// [`poll_every`] of the probe `interval`.
pub(crate) async fn report(
    health: Health,
    orchestrator: Arc<Orchestrator>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(poll_every(interval));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => health.update(&orchestrator),
        }
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

/// One `Watch`: the name's status now, then each change, until the end.
type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

/// What a `Watch` stream carries from one item to the next.
struct Watching {
    health: Health,
    name: String,
    changes: watch::Receiver<()>,
    sent: Option<ServingStatus>,
}

impl Watching {
    /// The next item: a changed status, or the end.
    async fn next(mut self) -> Option<(Result<HealthCheckResponse, Status>, Option<Self>)> {
        loop {
            // Marked seen before reading, so a change after the read wakes
            // the wait below.
            self.changes.borrow_and_update();
            let now = self
                .health
                .status(&self.name)
                .unwrap_or(ServingStatus::ServiceUnknown);
            if self.sent != Some(now) {
                self.sent = Some(now);
                return Some((Ok(answer(now)), Some(self)));
            }
            let ended = self.health.0.ended.clone();
            tokio::select! {
                // A change first: the last status (NOT_SERVING, at a drain)
                // is sent before the end, however close they come.
                biased;
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                () = ended.cancelled() => {
                    let status = Status::unavailable("grymd is shutting down");
                    return Some((Err(status), None));
                }
            }
        }
    }
}

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for Health {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let name = &request.get_ref().service;
        match self.status(name) {
            Some(status) => Ok(Response::new(answer(status))),
            None => Err(Status::not_found(format!(
                "no service `{name}`; grymd reports \"\", `{ORCHESTRATOR}` and \
                 `{MODEL_PREFIX}<model_id>` for each model"
            ))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let watching = Watching {
            health: self.clone(),
            name: request.into_inner().service,
            changes: self.0.changed.subscribe(),
            sent: None,
        };
        let stream =
            futures::stream::unfold(Some(watching), |state| async move { state?.next().await });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tonic_health::pb::health_server::Health as _;

    use super::*;

    fn statuses(pairs: &[(&str, ServingStatus)]) -> HashMap<String, ServingStatus> {
        pairs.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect()
    }

    fn request(name: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: name.to_owned(),
        })
    }

    async fn next_status(stream: &mut WatchStream) -> Result<ServingStatus, tonic::Code> {
        let item = tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .expect("an item within a second")
            .expect("the stream goes on");
        item.map(|answer| answer.status()).map_err(|s| s.code())
    }

    #[tokio::test]
    async fn a_watch_hears_its_own_name_change_and_nothing_else() {
        let health = Health::default();
        health.apply(statuses(&[
            ("", ServingStatus::Serving),
            ("grym.model/a", ServingStatus::Serving),
            ("grym.model/b", ServingStatus::Serving),
        ]));
        let mut watch = health
            .watch(request("grym.model/a"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(next_status(&mut watch).await, Ok(ServingStatus::Serving));
        health.apply(statuses(&[
            ("", ServingStatus::Serving),
            ("grym.model/a", ServingStatus::Serving),
            ("grym.model/b", ServingStatus::NotServing),
        ]));
        health.apply(statuses(&[
            ("", ServingStatus::Serving),
            ("grym.model/a", ServingStatus::NotServing),
            ("grym.model/b", ServingStatus::NotServing),
        ]));
        assert_eq!(
            next_status(&mut watch).await,
            Ok(ServingStatus::NotServing),
            "b's change was not sent to a's watcher"
        );
    }

    #[tokio::test]
    async fn an_unknown_name_is_not_found_to_check_and_service_unknown_to_watch_until_it_appears() {
        let health = Health::default();
        let refused = health.check(request("grym.model/late")).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::NotFound);
        let mut watch = health
            .watch(request("grym.model/late"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            next_status(&mut watch).await,
            Ok(ServingStatus::ServiceUnknown)
        );
        health.apply(statuses(&[("grym.model/late", ServingStatus::Serving)]));
        assert_eq!(next_status(&mut watch).await, Ok(ServingStatus::Serving));
        health.apply(statuses(&[]));
        assert_eq!(
            next_status(&mut watch).await,
            Ok(ServingStatus::ServiceUnknown),
            "a removed model is unknown again"
        );
    }

    #[tokio::test]
    async fn a_drain_turns_every_name_down_for_good_and_its_end_closes_every_watch() {
        let health = Health::default();
        health.apply(statuses(&[
            ("", ServingStatus::Serving),
            ("grym.model/a", ServingStatus::Serving),
        ]));
        let mut watch = health.watch(request("")).await.unwrap().into_inner();
        assert_eq!(next_status(&mut watch).await, Ok(ServingStatus::Serving));

        health.drain();
        assert_eq!(next_status(&mut watch).await, Ok(ServingStatus::NotServing));
        let model = health.check(request("grym.model/a")).await.unwrap();
        assert_eq!(model.get_ref().status(), ServingStatus::NotServing);
        assert!(
            health
                .apply(statuses(&[("", ServingStatus::Serving)]))
                .is_none(),
            "nothing turns serving again while draining"
        );
        assert_eq!(health.status(""), Some(ServingStatus::NotServing));

        health.end();
        assert_eq!(next_status(&mut watch).await, Err(tonic::Code::Unavailable));
        assert!(watch.next().await.is_none());
    }

    #[tokio::test]
    async fn a_drain_that_ends_at_once_still_sends_not_serving_before_the_end() {
        for _ in 0..100 {
            let health = Health::default();
            health.apply(statuses(&[("", ServingStatus::Serving)]));
            let mut watch = health.watch(request("")).await.unwrap().into_inner();
            assert_eq!(next_status(&mut watch).await, Ok(ServingStatus::Serving));
            health.drain();
            health.end();
            assert_eq!(next_status(&mut watch).await, Ok(ServingStatus::NotServing));
            assert_eq!(next_status(&mut watch).await, Err(tonic::Code::Unavailable));
        }
    }

    #[test]
    fn the_registry_is_looked_at_well_within_a_probe_interval() {
        assert_eq!(
            poll_every(Duration::from_secs(5)),
            Duration::from_millis(100)
        );
        assert_eq!(
            poll_every(Duration::from_millis(500)),
            Duration::from_millis(50)
        );
        assert_eq!(
            poll_every(Duration::from_millis(1)),
            Duration::from_millis(10)
        );
    }
}
