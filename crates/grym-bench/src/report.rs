//! How results read: the console summary of one run, the machine a run
//! was measured on, and the comparison's Markdown section, which replaces
//! the text between two markers in BENCHMARKS.md.

use std::fmt::Write as _;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::load::{LoadResult, Mode};
use crate::stats::{Percentiles, Spread};

/// The line before the generated section of BENCHMARKS.md.
pub(crate) const START_MARKER: &str = "<!-- compare:start -->";
/// The line after it.
pub(crate) const END_MARKER: &str = "<!-- compare:end -->";

/// The machine a comparison ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Machine {
    /// Cores available to this process.
    pub(crate) nproc: usize,
    /// The CPU's model name.
    pub(crate) cpu: String,
    /// The kernel release.
    pub(crate) kernel: String,
    /// Memory, in GiB.
    pub(crate) memory_gib: f64,
}

impl Machine {
    /// This machine, from `/proc` (Linux).
    pub(crate) fn this() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu: cpu_model(&read("/proc/cpuinfo")).unwrap_or_else(|| "unknown CPU".to_owned()),
            kernel: {
                let release = read("/proc/sys/kernel/osrelease").trim().to_owned();
                if release.is_empty() {
                    "unknown".to_owned()
                } else {
                    release
                }
            },
            memory_gib: memory_gib(&read("/proc/meminfo")).unwrap_or(0.0),
        }
    }

    /// One line: `2 cores (nproc) of Intel(R) Xeon(R) ..., 23.5 GiB, Linux 6.1`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} cores (nproc) of {}, {:.1} GiB, Linux {}",
            self.nproc, self.cpu, self.memory_gib, self.kernel
        )
    }
}

/// The first `model name` of a `/proc/cpuinfo`.
pub(crate) fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// `MemTotal` of a `/proc/meminfo`, in GiB.
pub(crate) fn memory_gib(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / (1024.0 * 1024.0))
}

/// A number with thousands separators, rounded: `12,345`.
pub(crate) fn thousands(value: f64) -> String {
    let rounded = value.round();
    let digits = format!("{:.0}", rounded.abs());
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if rounded < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Microseconds as a table shows them: one decimal under 100, whole
/// numbers with separators above.
pub(crate) fn micros(value: f64) -> String {
    if value.abs() < 100.0 {
        format!("{value:.1}")
    } else {
        thousands(value)
    }
}

/// Microseconds with a sign, for added latency.
pub(crate) fn signed_micros(value: f64) -> String {
    if value >= 0.0 {
        format!("+{}", micros(value))
    } else {
        micros(value)
    }
}

/// A duration given in microseconds, with its unit: `182 µs`, `1.20 ms`.
pub(crate) fn human_micros(value: f64) -> String {
    if value < 1000.0 {
        format!("{value:.0} µs")
    } else if value < 1_000_000.0 {
        format!("{:.2} ms", value / 1000.0)
    } else {
        format!("{:.2} s", value / 1_000_000.0)
    }
}

/// A spread as `median (min–max)`, each value formatted by `format`.
pub(crate) fn spread(spread: &Spread, format: fn(f64) -> String) -> String {
    format!(
        "{} ({}–{})",
        format(spread.median),
        format(spread.min),
        format(spread.max)
    )
}

fn mode(mode: &Mode) -> String {
    match mode {
        Mode::Open { rate } => format!("open loop at {}/s", thousands(*rate)),
        Mode::Closed { concurrency } => format!("closed loop, {concurrency} in flight"),
    }
}

fn percentiles_line(latency: &Percentiles) -> String {
    latency
        .quantiles()
        .iter()
        .map(|(name, value)| format!("{name} {}", human_micros(*value)))
        .chain([
            format!("max {}", human_micros(latency.max)),
            format!("mean {}", human_micros(latency.mean)),
        ])
        .collect::<Vec<_>>()
        .join("   ")
}

/// The console summary of one run.
pub(crate) fn run_summary(result: &LoadResult) -> String {
    let mut out = format!(
        "{} ({}) · {} · {} connection(s) · {}s after {}s of warm-up\n",
        result.label,
        result.address,
        mode(&result.mode),
        result.connections,
        result.duration_s,
        result.warmup_s,
    );
    let failures = if result.failures.is_empty() {
        "0 failed".to_owned()
    } else {
        result
            .failures
            .iter()
            .map(|(kind, count)| format!("{count} {kind}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "  requests   {} ok, {failures}; {}/s",
        result.successes,
        thousands(result.throughput)
    );
    let _ = writeln!(out, "  latency    {}", percentiles_line(&result.latency_us));
    for (kind, latency) in &result.failure_latency_us {
        let _ = writeln!(out, "  {kind:<10} {}", percentiles_line(latency));
    }
    if let Some(lag) = &result.send_lag_us {
        let _ = writeln!(
            out,
            "  send lag   p50 {}   p99 {}   (the pacer's own delay, included in latency)",
            human_micros(lag.p50),
            human_micros(lag.p99)
        );
    }
    if !result.sustained() {
        let _ = writeln!(out, "  NOT SUSTAINED: failures, or under 95% of the rate");
    }
    out
}

/// Replaces what lies between the markers of `document` with `section`,
/// or appends the markers and section when the document has neither.
pub(crate) fn replace_section(document: &str, section: &str) -> anyhow::Result<String> {
    let block = format!("{START_MARKER}\n{}\n{END_MARKER}", section.trim_end());
    match (document.find(START_MARKER), document.find(END_MARKER)) {
        (Some(start), Some(end)) if start < end => Ok(format!(
            "{}{block}{}",
            &document[..start],
            &document[end + END_MARKER.len()..]
        )),
        (None, None) => Ok(format!("{}\n\n{block}\n", document.trim_end())),
        _ => bail!("the markers {START_MARKER} and {END_MARKER} are not a pair in that order"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::load::Protocol;

    #[test]
    fn the_cpu_model_and_memory_are_read_from_proc() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
        let meminfo = "MemTotal:       25165824 kB\nMemFree:        1000 kB\n";
        assert_eq!(memory_gib(meminfo), Some(24.0));
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-12_345.0), "-12,345");
    }

    #[test]
    fn microseconds_keep_a_decimal_only_when_small() {
        assert_eq!(micros(12.34), "12.3");
        assert_eq!(micros(182.4), "182");
        assert_eq!(micros(12_345.0), "12,345");
        assert_eq!(signed_micros(12.34), "+12.3");
        assert_eq!(signed_micros(-5.0), "-5.0");
        assert_eq!(human_micros(182.4), "182 µs");
        assert_eq!(human_micros(1204.0), "1.20 ms");
        assert_eq!(human_micros(2_500_000.0), "2.50 s");
    }

    #[test]
    fn a_spread_reads_median_then_range() {
        let s = Spread {
            median: 150.0,
            min: 120.0,
            max: 1200.0,
        };
        assert_eq!(spread(&s, micros), "150 (120–1,200)");
    }

    #[test]
    fn the_section_between_the_markers_is_replaced_and_the_rest_kept() {
        let document = format!("# B\n\nbefore\n\n{START_MARKER}\nold\n{END_MARKER}\n\nafter\n");
        let updated = replace_section(&document, "new\n").unwrap();
        assert_eq!(
            updated,
            format!("# B\n\nbefore\n\n{START_MARKER}\nnew\n{END_MARKER}\n\nafter\n")
        );
        // Idempotent.
        assert_eq!(replace_section(&updated, "new").unwrap(), updated);
    }

    #[test]
    fn a_document_without_markers_gets_the_section_appended() {
        let updated = replace_section("# B\n\ntext\n", "new").unwrap();
        assert_eq!(
            updated,
            format!("# B\n\ntext\n\n{START_MARKER}\nnew\n{END_MARKER}\n")
        );
    }

    #[test]
    fn a_lone_or_misordered_marker_is_an_error() {
        assert!(replace_section(&format!("{START_MARKER}\n"), "x").is_err());
        assert!(replace_section(&format!("{END_MARKER}\n{START_MARKER}\n"), "x").is_err());
    }

    #[test]
    fn a_run_summary_names_the_path_mode_and_figures() {
        let result = LoadResult {
            label: "grymd".into(),
            protocol: Protocol::Grymd,
            address: "127.0.0.1:50051".into(),
            mode: Mode::Open { rate: 5000.0 },
            connections: 4,
            warmup_s: 1.0,
            duration_s: 5.0,
            successes: 25_000,
            failures: BTreeMap::new(),
            throughput: 5000.0,
            latency_us: Percentiles {
                p50: 182.0,
                p90: 240.0,
                p99: 512.0,
                p999: 1204.0,
                max: 3400.0,
                mean: 190.0,
            },
            failure_latency_us: BTreeMap::new(),
            send_lag_us: Some(Percentiles {
                p50: 55.0,
                p99: 120.0,
                ..Percentiles::default()
            }),
        };
        let summary = run_summary(&result);
        assert!(summary.starts_with("grymd (127.0.0.1:50051) · open loop at 5,000/s"));
        assert!(summary.contains("25000 ok, 0 failed; 5,000/s"));
        assert!(summary.contains("p50 182 µs   p90 240 µs   p99 512 µs   p99.9 1.20 ms"));
        assert!(summary.contains("send lag   p50 55 µs   p99 120 µs"));
        assert!(!summary.contains("NOT SUSTAINED"));
    }
}
