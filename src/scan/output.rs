//! The three shapes of a scan's outcome: a table for people, a stable JSON document (schema in
//! the README), and OpenReports `Report`s (`openreports.io/v1alpha1`, one per namespace, in a
//! `List` ready for `kubectl apply -f -`), shaped after the `reports-api` types: `source`,
//! `results[]` with `policy` (required), `rule`, `result`, `resources` (object references),
//! `properties` (string map), `timestamp` (`seconds`, `nanos`), and `summary` counts.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::{Outcome, StaleValue};
use crate::image;
use crate::policy::live::{Finding, FindingKind};
use crate::workload::WorkloadKind;

/// `apiVersion` of the JSON document.
pub const JSON_API_VERSION: &str = "helm-guard.io/v1alpha1";
/// The policy name, report name and source in OpenReports.
pub const SOURCE: &str = "helm-guard";

fn api_version(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment
        | WorkloadKind::StatefulSet
        | WorkloadKind::DaemonSet
        | WorkloadKind::ReplicaSet => "apps/v1",
        WorkloadKind::Job | WorkloadKind::CronJob => "batch/v1",
        WorkloadKind::Pod => "v1",
    }
}

fn workload_name(f: &Finding) -> String {
    format!(
        "{}/{}",
        f.workload.kind.as_str().to_ascii_lowercase(),
        f.workload.name
    )
}

fn by(f: &Finding) -> String {
    let mut s = f.manager.clone().unwrap_or_else(|| "-".into());
    if let Some(u) = &f.user {
        s.push_str(&format!(" ({u})"));
    }
    if let Some(r) = f
        .reason
        .as_deref()
        .filter(|_| f.kind == FindingKind::BreakGlass)
    {
        s.push_str(&format!(", break-glass: {r}"));
    }
    s
}

fn columns(rows: &[Vec<String>], out: &mut impl Write) -> std::io::Result<()> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            let n = c.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(n),
                None => widths.push(n),
            }
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// One row per finding, then the stale values, then the summary line.
pub fn table(o: &Outcome, out: &mut impl Write) -> std::io::Result<()> {
    if !o.findings.is_empty() {
        let mut rows = vec![
            [
                "NAMESPACE",
                "WORKLOAD",
                "CONTAINER",
                "LIVE IMAGE",
                "CHART IMAGE",
                "RELEASE@REV",
                "SINCE",
                "BY",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for f in &o.findings {
            rows.push(vec![
                f.workload.namespace.to_string(),
                workload_name(f),
                f.container.clone(),
                f.live_image.clone(),
                f.chart_image
                    .clone()
                    .unwrap_or_else(|| "(not rendered)".into()),
                format!("{}@{}", f.release, f.revision),
                f.since.clone().unwrap_or_else(|| "-".into()),
                by(f),
            ]);
        }
        columns(&rows, out)?;
        writeln!(out)?;
    }
    if !o.stale.is_empty() {
        writeln!(out, "Stale image values persisted in the releases:")?;
        let mut rows = vec![
            [
                "RELEASE",
                "REV",
                "PATH",
                "VALUE",
                "SINCE",
                "CHART DEFAULT",
                "TO DROP IT",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for s in &o.stale {
            rows.push(vec![
                s.release.to_string(),
                s.revision.to_string(),
                s.pin.path.clone(),
                s.pin.value.clone(),
                s.pin.since_revision.to_string(),
                chart_default(s),
                s.drop.clone(),
            ]);
        }
        columns(&rows, out)?;
        writeln!(out)?;
    }
    let mut summary = format!(
        "{} workloads of {} releases checked: {} drifted containers, {} stale image values",
        o.workloads,
        o.releases,
        o.drifted(),
        o.stale.len()
    );
    if o.break_glass() > 0 {
        summary.push_str(&format!(", {} under break-glass", o.break_glass()));
    }
    if o.skipped_records > 0 {
        summary.push_str(&format!(", {} release records skipped", o.skipped_records));
    }
    writeln!(out, "{summary}")
}

fn chart_default(s: &StaleValue) -> String {
    match (&s.pin.chart_default, s.pin.reuse_values) {
        (_, true) => "unknown (--reuse-values)".into(),
        (Some(d), _) => d.clone(),
        (None, _) => "-".into(),
    }
}

fn finding_json(f: &Finding) -> Value {
    json!({
        "type": f.kind.as_str(),
        "namespace": f.workload.namespace,
        "kind": f.workload.kind.as_str(),
        "name": f.workload.name,
        "container": f.container,
        "init": f.init,
        "liveImage": f.live_image,
        "chartImage": f.chart_image,
        "release": f.release.name,
        "releaseNamespace": f.release.namespace,
        "revision": f.revision,
        "since": f.since,
        "manager": f.manager,
        "user": f.user,
        "reason": f.reason,
    })
}

fn stale_json(s: &StaleValue) -> Value {
    json!({
        "namespace": s.release.namespace,
        "release": s.release.name,
        "revision": s.revision,
        "chart": s.chart,
        "path": s.pin.path,
        "value": s.pin.value,
        "since": s.pin.since_revision,
        "chartDefault": s.pin.chart_default,
        "reuseValues": s.pin.reuse_values,
        "drop": s.drop,
    })
}

/// The stable JSON document (schema: README, "scan JSON").
pub fn json(o: &Outcome) -> Value {
    json!({
        "apiVersion": JSON_API_VERSION,
        "kind": "ScanResult",
        "summary": {
            "workloads": o.workloads,
            "releases": o.releases,
            "driftedContainers": o.drifted(),
            "breakGlass": o.break_glass(),
            "staleImageValues": o.stale.len(),
            "skippedRecords": o.skipped_records,
        },
        "findings": o.findings.iter().map(finding_json).collect::<Vec<_>>(),
        "staleValues": o.stale.iter().map(stale_json).collect::<Vec<_>>(),
    })
}

fn props(pairs: &[(&str, Option<String>)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            m.insert((*k).to_owned(), Value::String(v.clone()));
        }
    }
    Value::Object(m)
}

fn finding_result(f: &Finding, timestamp: &Value) -> (Value, &'static str) {
    let (rule, result, severity) = match f.kind {
        FindingKind::BreakGlass => ("break-glass", "skip", "info"),
        FindingKind::Drift | FindingKind::Added => ("image-drift", "fail", "medium"),
    };
    let what = match &f.chart_image {
        Some(chart) => format!(
            "container {} runs {}; release {} revision {} renders {}",
            f.container,
            image::brief(&f.live_image),
            f.release,
            f.revision,
            image::brief(chart)
        ),
        None => format!(
            "container {} ({}) is not rendered by release {} revision {}",
            f.container,
            image::brief(&f.live_image),
            f.release,
            f.revision
        ),
    };
    let message = match (&f.kind, &f.reason) {
        (FindingKind::BreakGlass, Some(r)) => format!("{what}; allowed by break-glass: {r}"),
        _ => what,
    };
    let mut r = json!({
        "source": SOURCE,
        "policy": SOURCE,
        "rule": rule,
        "result": result,
        "severity": severity,
        "scored": true,
        "timestamp": timestamp,
        "message": message,
        "resources": [{
            "apiVersion": api_version(f.workload.kind),
            "kind": f.workload.kind.as_str(),
            "namespace": f.workload.namespace,
            "name": f.workload.name,
        }],
        "properties": props(&[
            ("release", Some(f.release.to_string())),
            ("revision", Some(f.revision.to_string())),
            ("container", Some(f.container.clone())),
            ("chartImage", f.chart_image.clone()),
            ("liveImage", Some(f.live_image.clone())),
            ("manager", f.manager.clone()),
            ("user", f.user.clone()),
            ("since", f.since.clone()),
            ("reason", f.reason.clone()),
            ("notRendered", f.chart_image.is_none().then(|| "true".to_owned())),
        ]),
    });
    if f.kind == FindingKind::BreakGlass
        && let Some(obj) = r.as_object_mut()
    {
        obj.insert("scored".into(), Value::Bool(false));
    }
    (r, result)
}

fn stale_result(s: &StaleValue, timestamp: &Value) -> Value {
    json!({
        "source": SOURCE,
        "policy": SOURCE,
        "rule": "stale-image-value",
        "result": "warn",
        "severity": "low",
        "scored": false,
        "timestamp": timestamp,
        "message": format!(
            "release {} revision {} keeps {}={} from revision {}; chart default is {}; to drop it: {}",
            s.release, s.revision, s.pin.path, s.pin.value, s.pin.since_revision,
            chart_default(s), s.drop
        ),
        "properties": props(&[
            ("release", Some(s.release.to_string())),
            ("revision", Some(s.revision.to_string())),
            ("path", Some(s.pin.path.clone())),
            ("value", Some(s.pin.value.clone())),
            ("since", Some(s.pin.since_revision.to_string())),
            ("chartDefault", s.pin.chart_default.clone()),
            ("chart", Some(s.chart.clone())),
            ("drop", Some(s.drop.clone())),
        ]),
    })
}

/// One `Report` per namespace with results, in a `List`.
pub fn openreports(o: &Outcome, now: SystemTime) -> Value {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let timestamp = json!({"seconds": since_epoch.as_secs(), "nanos": since_epoch.subsec_nanos()});
    let mut by_ns: BTreeMap<&str, (Vec<Value>, BTreeMap<&'static str, usize>)> = BTreeMap::new();
    for f in &o.findings {
        let (r, result) = finding_result(f, &timestamp);
        let entry = by_ns.entry(&f.workload.namespace).or_default();
        entry.0.push(r);
        *entry.1.entry(result).or_default() += 1;
    }
    for s in &o.stale {
        let entry = by_ns.entry(&s.release.namespace).or_default();
        entry.0.push(stale_result(s, &timestamp));
        *entry.1.entry("warn").or_default() += 1;
    }
    let items: Vec<Value> = by_ns
        .into_iter()
        .map(|(ns, (results, counts))| {
            let n = |k: &str| counts.get(k).copied().unwrap_or(0);
            json!({
                "apiVersion": "openreports.io/v1alpha1",
                "kind": "Report",
                "metadata": {
                    "name": SOURCE,
                    "namespace": ns,
                    "labels": {"app.kubernetes.io/managed-by": SOURCE},
                },
                "source": SOURCE,
                "summary": {"pass": n("pass"), "fail": n("fail"), "warn": n("warn"),
                            "error": n("error"), "skip": n("skip")},
                "results": results,
            })
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}
