//! Log lines on standard error, text or JSON, stamped with the trace.
//!
//! A line written while a traced span is entered carries that span's trace
//! and span ids, so a log line leads to its trace and back: text lines end
//! with ` trace_id=… span_id=…`, JSON objects get `"trace_id"` and
//! `"span_id"` members. The ids are those of the OpenTelemetry context that
//! the OpenTelemetry layer makes current when a span is entered; with traces
//! not exported there is none, and lines carry no ids.
//!
//! The stamp is added where the formatted line is written ([`Stamped`]),
//! after the `fmt` layer has formatted it: that keeps the formatter's own
//! output (colours included) untouched.

use std::io::{self, IsTerminal as _};

use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;

use crate::LogFormat;

/// The `fmt` layer of [`init`](crate::init): `format` lines on standard
/// error, coloured when standard error is a terminal.
pub(crate) fn fmt_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let writer = StampingWriter {
        inner: io::stderr,
        format,
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => Box::new(layer.with_ansi(io::stderr().is_terminal())),
        LogFormat::Json => Box::new(layer.json().flatten_event(true)),
    }
}

/// The trace and span ids of the current OpenTelemetry context, if it holds
/// a valid span.
fn current_ids() -> Option<(TraceId, SpanId)> {
    opentelemetry::Context::map_current(|cx| {
        let span = cx.span();
        let context = span.span_context();
        context
            .is_valid()
            .then(|| (context.trace_id(), context.span_id()))
    })
}

/// Makes [`Stamped`] writers over `inner`.
pub(crate) struct StampingWriter<M> {
    inner: M,
    format: LogFormat,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for StampingWriter<M> {
    type Writer = Stamped<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Stamped {
            inner: self.inner.make_writer(),
            format: self.format,
            ids: current_ids(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Stamped {
            inner: self.inner.make_writer_for(meta),
            format: self.format,
            ids: current_ids(),
        }
    }
}

/// A writer for one log line that adds the trace and span ids, taken when
/// the line was logged, to the first write it is given: the `fmt` layer
/// writes each formatted line in one piece.
pub(crate) struct Stamped<W> {
    inner: W,
    format: LogFormat,
    ids: Option<(TraceId, SpanId)>,
}

impl<W: io::Write> io::Write for Stamped<W> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        match self.ids.take() {
            None => self.inner.write(line),
            Some((trace_id, span_id)) => {
                let stamped = stamp(line, self.format, trace_id, span_id);
                self.inner.write_all(&stamped)?;
                Ok(line.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `line` with the ids placed before its end: before the closing brace of a
/// JSON object, before the newline of a text line.
fn stamp(line: &[u8], format: LogFormat, trace_id: TraceId, span_id: SpanId) -> Vec<u8> {
    let body_len = line.strip_suffix(b"\n").map_or(line.len(), <[u8]>::len);
    let (body, end) = line.split_at(body_len);
    let mut stamped = Vec::with_capacity(line.len() + 80);
    match (format, body.strip_suffix(b"}")) {
        (LogFormat::Json, Some(object)) => {
            stamped.extend_from_slice(object);
            stamped.extend_from_slice(
                format!(",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}").as_bytes(),
            );
        }
        _ => {
            stamped.extend_from_slice(body);
            stamped.extend_from_slice(format!(" trace_id={trace_id} span_id={span_id}").as_bytes());
        }
    }
    stamped.extend_from_slice(end);
    stamped
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn ids() -> (TraceId, SpanId) {
        (
            TraceId::from_hex(TRACE).unwrap(),
            SpanId::from_hex(SPAN).unwrap(),
        )
    }

    #[test]
    fn text_lines_end_with_the_ids() {
        let (trace, span) = ids();
        let line = stamp(b"2026 INFO grymd: ready\n", LogFormat::Text, trace, span);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            format!("2026 INFO grymd: ready trace_id={TRACE} span_id={SPAN}\n")
        );
    }

    #[test]
    fn json_objects_get_the_ids_as_members() {
        let (trace, span) = ids();
        let line = stamp(
            br#"{"level":"INFO","message":"ready"}"#,
            LogFormat::Json,
            trace,
            span,
        );
        let line = String::from_utf8(line).unwrap();
        assert_eq!(
            line,
            format!(
                r#"{{"level":"INFO","message":"ready","trace_id":"{TRACE}","span_id":"{SPAN}"}}"#
            )
        );
    }

    /// A writer that keeps what it is given.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    #[test]
    fn lines_logged_inside_a_trace_carry_its_ids_and_others_none() {
        let captured = Captured::default();
        let writer = StampingWriter {
            inner: {
                let captured = captured.clone();
                move || captured.clone()
            },
            format: LogFormat::Json,
        };
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(writer),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let (trace, span) = ids();
            let remote = SpanContext::new(trace, span, TraceFlags::SAMPLED, true, TraceState::NONE);
            let _attached = opentelemetry::Context::new()
                .with_remote_span_context(remote)
                .attach();
            tracing::info!(answer = 42, "inside");
        });
        let lines = captured.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let outside: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(outside["message"], "outside");
        assert!(outside.get("trace_id").is_none(), "{outside}");
        let inside: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(inside["message"], "inside");
        assert_eq!(inside["answer"], 42);
        assert_eq!(inside["trace_id"], TRACE);
        assert_eq!(inside["span_id"], SPAN);
    }
}
