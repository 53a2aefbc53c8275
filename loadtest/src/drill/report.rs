//! The drill's report: `report.json` (every figure), `report.md` (what a person reads in
//! a minute) and `chart.svg` (throughput, depth and oldest ready age over time, the faults
//! marked).

use std::path::Path;

use serde::Serialize;

use super::check::{describe_violations, Findings, Percentiles};
use super::monitor::Sample;
use super::{Bloat, Injected, Profile};

/// What the report is made from.
pub(crate) struct Inputs {
    pub(crate) profile: Profile,
    pub(crate) workers: usize,
    pub(crate) duration_s: f64,
    pub(crate) findings: Findings,
    pub(crate) samples: Vec<Sample>,
    pub(crate) faults: Vec<Injected>,
    pub(crate) bloat: Vec<Bloat>,
    pub(crate) peak_worker_rss_kib: u64,
    pub(crate) recipients: usize,
    pub(crate) duplicate_sends: usize,
    pub(crate) crash_window_sends: usize,
    pub(crate) violations_outside: Vec<String>,
    /// Completed runs per second (seconds since the start).
    pub(crate) runs: Vec<(f64, i64)>,
    /// Each recovery email sent during smtp-busy: enqueue to the relay's 250, in ms.
    pub(crate) recovery_latency_ms: Vec<f64>,
}

/// A health status change seen by the monitor.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Transition {
    at_s: f64,
    from: String,
    to: String,
}

/// `report.json`.
#[derive(Serialize)]
pub(crate) struct Report {
    profile: String,
    passed: bool,
    violations: Vec<String>,
    jobs: i64,
    completed: i64,
    dead_letter: i64,
    cancelled: i64,
    lost: i64,
    lost_ids: Vec<uuid::Uuid>,
    unexpected_outcomes: i64,
    overlapping_runs: i64,
    runs_past_lease: i64,
    duplicate_sends: usize,
    crash_window_sends: usize,
    campaign_recipients: usize,
    throughput_per_s: f64,
    pickup_ms: Percentiles,
    retries: i64,
    rescued: i64,
    interrupted_runs: i64,
    recovery_latency_ms: Vec<f64>,
    max_oldest_ready_age_s: f64,
    health_transitions: Vec<Transition>,
    public_health_ms: Percentiles,
    faults: Vec<Injected>,
    workers: usize,
    peak_worker_rss_mib: f64,
    duration_s: f64,
    bloat: Vec<Bloat>,
    samples: Vec<Sample>,
    #[serde(skip)]
    runs: Vec<(f64, i64)>,
}

fn percentiles(mut values: Vec<f64>) -> Percentiles {
    if values.is_empty() {
        return Percentiles::default();
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.5),
        p95: at(0.95),
        p99: at(0.99),
    }
}

impl Report {
    pub(crate) fn new(inputs: Inputs) -> Report {
        let f = &inputs.findings;
        let mut violations = inputs.violations_outside.clone();
        if f.violated() {
            violations.extend(describe_violations(f).lines().map(str::to_owned));
        }
        let mut transitions = Vec::new();
        for pair in inputs.samples.windows(2) {
            if pair[0].status != pair[1].status {
                transitions.push(Transition {
                    at_s: pair[1].at_s,
                    from: pair[0].status.clone(),
                    to: pair[1].status.clone(),
                });
            }
        }
        let finished = f.completed + f.dead_letter + f.cancelled;
        Report {
            profile: format!("{:?}", inputs.profile).to_lowercase(),
            passed: violations.is_empty(),
            violations,
            jobs: f.jobs,
            completed: f.completed,
            dead_letter: f.dead_letter,
            cancelled: f.cancelled,
            lost: f.lost_count,
            lost_ids: f.lost.clone(),
            unexpected_outcomes: f.unexpected_count,
            overlapping_runs: f.overlapping_count,
            runs_past_lease: f.runs_past_lease_count,
            duplicate_sends: inputs.duplicate_sends,
            crash_window_sends: inputs.crash_window_sends,
            campaign_recipients: inputs.recipients,
            throughput_per_s: finished as f64 / inputs.duration_s.max(0.001),
            pickup_ms: f.pickup_ms.clone(),
            retries: f.retries,
            rescued: f.rescued,
            interrupted_runs: f.interrupted_runs,
            recovery_latency_ms: inputs.recovery_latency_ms,
            max_oldest_ready_age_s: inputs
                .samples
                .iter()
                .filter_map(|s| s.oldest_ready_age_s)
                .fold(0.0, f64::max),
            health_transitions: transitions,
            public_health_ms: percentiles(
                inputs.samples.iter().filter_map(|s| s.public_ms).collect(),
            ),
            faults: inputs.faults,
            workers: inputs.workers,
            peak_worker_rss_mib: inputs.peak_worker_rss_kib as f64 / 1024.0,
            duration_s: inputs.duration_s,
            bloat: inputs.bloat,
            samples: inputs.samples,
            runs: inputs.runs,
        }
    }

    pub(crate) fn passed(&self) -> bool {
        self.passed
    }

    /// A few lines for the terminal.
    pub(crate) fn summary(&self) -> String {
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let mut text = format!(
            "drill {verdict}: {} jobs ({} completed, {} dead-lettered as expected or not, {} lost, {} overlapping runs, {} runs past their lease) in {:.0} s, {:.0} jobs/s; {} faults",
            self.jobs,
            self.completed,
            self.dead_letter,
            self.lost,
            self.overlapping_runs,
            self.runs_past_lease,
            self.duration_s,
            self.throughput_per_s,
            self.faults.len()
        );
        for violation in &self.violations {
            text.push_str(&format!("\nviolation: {violation}"));
        }
        text
    }

    pub(crate) fn write(&self, out: &Path) -> anyhow::Result<()> {
        std::fs::write(out.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(out.join("report.md"), self.markdown())?;
        self.chart(&out.join("chart.svg"))?;
        Ok(())
    }

    fn markdown(&self) -> String {
        let mut md = format!(
            "# Stress drill: {}\n\n**{}** ({} profile, {} workers, {:.0} s)\n\n",
            if self.passed { "passed" } else { "FAILED" },
            if self.passed {
                "Every invariant held."
            } else {
                "An invariant was broken: see Violations."
            },
            self.profile,
            self.workers,
            self.duration_s
        );
        if !self.violations.is_empty() {
            md.push_str("## Violations\n\n");
            for v in &self.violations {
                md.push_str(&format!("- {v}\n"));
            }
            md.push('\n');
        }
        md.push_str("## Outcome\n\n| figure | value |\n|---|---|\n");
        let rows: Vec<(&str, String)> = vec![
            ("jobs", self.jobs.to_string()),
            ("completed", self.completed.to_string()),
            (
                "dead-lettered (all as expected unless listed above)",
                self.dead_letter.to_string(),
            ),
            ("lost", self.lost.to_string()),
            ("overlapping runs", self.overlapping_runs.to_string()),
            ("runs past their lease", self.runs_past_lease.to_string()),
            ("campaign recipients", self.campaign_recipients.to_string()),
            (
                "duplicate sends (of them in the crash window)",
                format!("{} ({})", self.duplicate_sends, self.crash_window_sends),
            ),
            ("throughput", format!("{:.0} jobs/s", self.throughput_per_s)),
            (
                "pickup p50 / p95 / p99",
                format!(
                    "{:.0} / {:.0} / {:.0} ms",
                    self.pickup_ms.p50, self.pickup_ms.p95, self.pickup_ms.p99
                ),
            ),
            ("retries", self.retries.to_string()),
            (
                "recovery emails during smtp-busy (enqueue to 250)",
                if self.recovery_latency_ms.is_empty() {
                    "none sent".to_owned()
                } else {
                    self.recovery_latency_ms
                        .iter()
                        .map(|ms| format!("{ms:.0} ms"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ),
            (
                "interrupted runs / jobs rescued",
                format!("{} / {}", self.interrupted_runs, self.rescued),
            ),
            (
                "oldest ready job, at worst",
                format!("{:.1} s", self.max_oldest_ready_age_s),
            ),
            (
                "public health p50 / p99",
                format!(
                    "{:.1} / {:.1} ms",
                    self.public_health_ms.p50, self.public_health_ms.p99
                ),
            ),
            (
                "peak worker RSS",
                format!("{:.1} MiB", self.peak_worker_rss_mib),
            ),
        ];
        for (name, value) in rows {
            md.push_str(&format!("| {name} | {value} |\n"));
        }
        md.push_str("\n## Faults\n\n");
        if self.faults.is_empty() {
            md.push_str("None injected.\n");
        }
        for fault in &self.faults {
            md.push_str(&format!("- {:.1} s: {}\n", fault.at_s, fault.detail));
        }
        md.push_str("\n## Health\n\n");
        if self.health_transitions.is_empty() {
            md.push_str("No change of status.\n");
        }
        for t in &self.health_transitions {
            md.push_str(&format!("- {:.1} s: {} → {}\n", t.at_s, t.from, t.to));
        }
        if let (Some(first), Some(last)) = (self.bloat.first(), self.bloat.last()) {
            let peak = self.bloat.iter().map(|b| b.dead_tuples).max().unwrap_or(0);
            md.push_str(&format!(
                "\n## Table\n\nDead tuples in `docket.jobs`: {} at the start, {peak} at most, {} at the end; table {:.1} MiB → {:.1} MiB, indexes {:.1} MiB → {:.1} MiB.\n",
                first.dead_tuples,
                last.dead_tuples,
                first.table_bytes as f64 / 1048576.0,
                last.table_bytes as f64 / 1048576.0,
                first.index_bytes as f64 / 1048576.0,
                last.index_bytes as f64 / 1048576.0,
            ));
        }
        md.push_str("\n![throughput, depth and oldest ready age](chart.svg)\n");
        md
    }

    fn chart(&self, path: &Path) -> anyhow::Result<()> {
        let end = self.duration_s.max(1.0);
        let panels = vec![
            (
                "jobs finished per second",
                // Every second, the ones without a finished run as zero (a stall shows
                // as one, not as a line drawn across it).
                {
                    let runs: std::collections::HashMap<i64, i64> =
                        self.runs.iter().map(|(t, n)| (*t as i64, *n)).collect();
                    (0..=end as i64)
                        .map(|t| (t as f64, runs.get(&t).copied().unwrap_or(0) as f64))
                        .collect()
                },
            ),
            (
                "live jobs (pending + retrying + processing)",
                self.samples
                    .iter()
                    .filter_map(|s| Some((s.at_s, s.live()? as f64)))
                    .collect(),
            ),
            (
                "oldest ready age, s",
                self.samples
                    .iter()
                    .map(|s| (s.at_s, s.oldest_ready_age_s.unwrap_or(0.0)))
                    .collect(),
            ),
        ];
        let marks: Vec<f64> = self.faults.iter().map(|fault| fault.at_s).collect();
        crate::chart::draw(path, (1000, 600), end, panels, &marks)
    }
}
