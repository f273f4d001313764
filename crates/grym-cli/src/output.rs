//! What `grym` prints: the contract's JSON for scripts (`--output json`),
//! short lines and tables for people.

use std::fmt::Write as _;
use std::time::Duration;

use grym_mcp::json::{self, Message};
use grym_proto::orchestrator::v1 as api;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Lines and tables for people.
    Text,
    /// The response message in protobuf's JSON mapping, one document (or,
    /// for `stream`, one line per event).
    Json,
}

/// `message` as one line of JSON.
pub(crate) fn json_line<M: Message>(message: &M) -> anyhow::Result<String> {
    Ok(json::to_json(message)?.to_string())
}

/// `message` as indented JSON.
pub(crate) fn json_pretty<M: Message>(message: &M) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&json::to_json(message)?)?)
}

/// A status without its `TASK_STATUS_` prefix.
pub(crate) fn status_name(status: api::TaskStatus) -> &'static str {
    let name = status.as_str_name();
    name.strip_prefix("TASK_STATUS_").unwrap_or(name)
}

fn duration(d: Option<&prost_types::Duration>) -> String {
    match d.and_then(|d| Duration::try_from(*d).ok()) {
        Some(d) if d >= Duration::from_secs(1) => format!("{:.2}s", d.as_secs_f64()),
        Some(d) => format!("{:.1}ms", d.as_secs_f64() * 1000.0),
        None => "-".to_owned(),
    }
}

/// A task's result for people.
pub(crate) fn result(result: &api::TaskResult) -> String {
    let mut out = String::new();
    let metrics = result.metrics.as_ref();
    let _ = writeln!(
        out,
        "task {}  {}  model {}  {}",
        result.task_id,
        status_name(result.status()),
        if result.model_id.is_empty() {
            "-"
        } else {
            &result.model_id
        },
        duration(metrics.and_then(|m| m.total_latency.as_ref())),
    );
    if let Some(recipe) = &result.recipe {
        let _ = writeln!(
            out,
            "recipe {} = {}",
            recipe.task_type,
            recipe.chain.join(" -> ")
        );
    }
    for step in &result.steps {
        let _ = writeln!(
            out,
            "  step {:<16} {:<18} {:<12} {}",
            step.step_id,
            status_name(step.status()),
            step.model_id,
            duration(step.latency.as_ref())
        );
    }
    if let Some(error) = &result.error {
        let _ = writeln!(out, "error {}: {}", error.code, error.message);
    }
    if let Some(output) = &result.output {
        output_text(&mut out, output);
    }
    out
}

fn output_text(out: &mut String, output: &api::TaskOutput) {
    if let Some(text) = &output.text {
        let _ = writeln!(out, "{text}");
    }
    if let Some(value) = &output.json {
        let value = grym_proto::json::value_to_json(value.clone());
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    }
    if !output.data.is_empty() {
        let _ = writeln!(
            out,
            "({} bytes of {})",
            output.data.len(),
            output.data_mime_type
        );
    }
}

/// Rows under a header, each column as wide as its widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut out, &mut header.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

fn health(health: api::ModelHealth) -> &'static str {
    match health {
        api::ModelHealth::Serving => "serving",
        api::ModelHealth::NotServing => "not serving",
        api::ModelHealth::Unspecified => "unknown",
    }
}

/// The models as a table.
pub(crate) fn models(response: &api::ListModelsResponse) -> String {
    let rows: Vec<Vec<String>> = response
        .models
        .iter()
        .map(|model| {
            let types = model
                .capabilities
                .iter()
                .map(|c| format!("{} ({:.2})", c.task_type, c.confidence))
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                model.id.clone(),
                model.kind.clone(),
                health(model.health()).to_owned(),
                model.replicas.len().to_string(),
                model.in_flight.to_string(),
                types,
            ]
        })
        .collect();
    table(
        &[
            "MODEL",
            "KIND",
            "HEALTH",
            "REPLICAS",
            "IN FLIGHT",
            "TASK TYPES (CONFIDENCE)",
        ],
        &rows,
    )
}

/// The bottlenecks as a table.
pub(crate) fn bottlenecks(response: &api::GetBottlenecksResponse) -> String {
    if response.bottlenecks.is_empty() {
        return "no bottlenecks\n".to_owned();
    }
    let rows: Vec<Vec<String>> = response
        .bottlenecks
        .iter()
        .map(|b| {
            vec![
                b.kind.clone(),
                b.subject.clone(),
                format!("{:.3}", b.value),
                format!("{:.3}", b.threshold),
                b.message.clone(),
            ]
        })
        .collect();
    table(&["KIND", "SUBJECT", "VALUE", "THRESHOLD", "MESSAGE"], &rows)
}

fn routing(out: &mut String, routing: &api::Routing) {
    let _ = writeln!(
        out,
        "chosen {}  expected {}  ({})",
        routing.chosen_model_id,
        duration(routing.estimated_latency.as_ref()),
        routing.explanation
    );
    if routing.candidates.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = routing
        .candidates
        .iter()
        .map(|c| {
            vec![
                c.model_id.clone(),
                format!("{:.3}", c.score),
                format!("{:.2}", c.confidence),
                format!("{:.2}", c.performance),
                format!("{:.2}", c.success_rate),
                duration(c.expected_latency.as_ref()),
                health(c.health()).to_owned(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "CANDIDATE",
            "SCORE",
            "CONFIDENCE",
            "PERFORMANCE",
            "SUCCESS",
            "EXPECTED",
            "HEALTH",
        ],
        &rows,
    ));
}

/// A plan for people.
pub(crate) fn plan(response: &api::PlanTaskResponse) -> String {
    let mut out = String::new();
    if let Some(analysis) = &response.analysis {
        let modality = analysis.modality().as_str_name();
        let modality = modality.strip_prefix("MODALITY_").unwrap_or(modality);
        let _ = writeln!(out, "input {modality} {}", analysis.mime_type);
    }
    if let Some(r) = &response.routing {
        routing(&mut out, r);
    }
    if let Some(composite) = &response.composite {
        let stages: Vec<String> = composite
            .stages
            .iter()
            .map(|stage| stage.step_ids.join(" + "))
            .collect();
        let _ = writeln!(out, "stages {}", stages.join(" -> "));
        let _ = writeln!(
            out,
            "critical path {}  expected {}",
            composite.critical_path.join(" -> "),
            duration(composite.estimated_latency.as_ref())
        );
        for step in &composite.steps {
            let model = step
                .routing
                .as_ref()
                .map_or("-", |r| r.chosen_model_id.as_str());
            let _ = writeln!(
                out,
                "  step {:<16} {:<24} {}",
                step.step_id, step.r#type, model
            );
        }
    }
    out
}
