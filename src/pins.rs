//! `helm-guard pins`: the image values persisted in each release's newest revision — what
//! `helm get values` shows — with the revision each came from, whether it overrides the chart's
//! default, and the command that drops it.
//!
//! With `--chart PATH` (a chart directory or packaged `.tgz`) the question is the one asked
//! before an upgrade: which of those values would override the *new* chart's defaults on a
//! plain `helm upgrade` (which re-applies the persisted values). The chart's `values.yaml`
//! and its subcharts' are read ([`chart`]); templates are never rendered.

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use crate::helm::DecodeLimits;
use crate::policy::Releases;
use crate::store::{Index, load_files};
use crate::values::{self, ValuesSummary};

pub mod chart;

use chart::ChartDefaults;

/// What `pins` was asked for.
#[derive(Clone, Debug)]
pub struct PinsOptions {
    pub releases: Vec<PathBuf>,
    pub release: Option<String>,
    pub namespace: Option<String>,
    pub json: bool,
    pub limits: DecodeLimits,
    /// The chart about to be installed: compare with its defaults instead.
    pub chart: Option<PathBuf>,
}

/// One row of the report.
struct Row {
    release: String,
    revision: u32,
    chart: String,
    pin: values::Persisted,
    drop: String,
}

/// Runs the report; returns the exit code (0, or 2 on bad input).
pub fn run(opts: &PinsOptions, mut out: impl Write, mut err: impl Write) -> i32 {
    let index = match load_files(&opts.releases, opts.limits) {
        Ok((index, report)) => {
            for skipped in &report.skipped {
                let _ = writeln!(err, "helm-guard pins: skipping {skipped}");
            }
            index
        }
        Err(e) => {
            let _ = writeln!(err, "helm-guard pins: {e}");
            return 2;
        }
    };
    let chart = match opts.chart.as_deref().map(chart::read).transpose() {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "helm-guard pins: {e}");
            return 2;
        }
    };
    let rows = rows(opts, &index, chart.as_ref());
    let written = if opts.json {
        let items: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "release": r.release, "revision": r.revision, "chart": r.chart,
                    "path": r.pin.path, "value": r.pin.value, "since": r.pin.since_revision,
                    "chartDefault": r.pin.chart_default, "overridesDefault": r.pin.overrides,
                    "reuseValues": r.pin.reuse_values, "drop": r.drop,
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&items).unwrap_or_default()
        )
    } else if let (Some(c), true) = (&chart, rows.is_empty()) {
        writeln!(
            out,
            "no persisted image value overrides the defaults of chart {}-{}",
            c.name, c.version
        )
    } else {
        table(&rows, &mut out)
    };
    if written.is_err() { 2 } else { 0 }
}

/// The rows of the report: the persisted image values of each selected release's newest
/// revision; with a chart, only those that would override its defaults.
fn rows(opts: &PinsOptions, index: &Index, chart: Option<&ChartDefaults>) -> Vec<Row> {
    let mut rows = Vec::new();
    for key in index.keys() {
        if opts.release.as_deref().is_some_and(|r| r != &*key.name)
            || opts
                .namespace
                .as_deref()
                .is_some_and(|n| n != &*key.namespace)
        {
            continue;
        }
        let history = index.history(&key);
        let Some(newest) = history.iter().max_by_key(|r| r.revision) else {
            continue;
        };
        let summaries: Vec<&ValuesSummary> = history.iter().map(|r| &r.values).collect();
        for mut pin in values::persisted(&summaries, &newest.values) {
            if let Some(c) = chart {
                // A plain `helm upgrade` re-applies the persisted value over the new default.
                pin.chart_default = c.default_at(&pin.path).map(str::to_owned);
                pin.overrides = Some(pin.chart_default.as_deref() != Some(pin.value.as_str()));
                pin.reuse_values = false;
                if pin.overrides != Some(true) {
                    continue;
                }
            }
            rows.push(Row {
                release: key.to_string(),
                revision: newest.revision,
                chart: format!("{}-{}", newest.chart.name, newest.chart.version),
                drop: values::drop_command(&key.name, &pin.path),
                pin,
            });
        }
    }
    rows
}

fn table(rows: &[Row], out: &mut impl Write) -> std::io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "no image values are persisted in these releases");
    }
    let header = [
        "RELEASE",
        "REV",
        "PATH",
        "VALUE",
        "SINCE",
        "CHART DEFAULT",
        "OVERRIDES",
        "TO DROP IT",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.release.clone(),
                r.revision.to_string(),
                r.pin.path.clone(),
                r.pin.value.clone(),
                r.pin.since_revision.to_string(),
                match (&r.pin.chart_default, r.pin.reuse_values) {
                    (_, true) => "unknown (--reuse-values)".into(),
                    (Some(d), _) => d.clone(),
                    (None, _) => "-".into(),
                },
                match r.pin.overrides {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "?".into(),
                },
                r.drop.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s
    };
    writeln!(out, "{}", line(&header.map(str::to_owned)))?;
    for row in &cells {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}
