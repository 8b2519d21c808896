//! Release records passing through admission: the stale persisted values check.
//!
//! Helm writes revision N+1 as `pending-upgrade` (or `pending-rollback`) before it touches any
//! workload. At that moment the record holds the values Helm is about to render with — including
//! every image value carried over from earlier revisions. This is where a stale pin can still be
//! pointed out (or the upgrade stopped) before anything changes. Helm's own bookkeeping is never
//! held up otherwise: any other record write, an undecodable record, a release without history
//! or the mutating webhook — all allowed untouched. Records are never mutated.

use serde_json::json;

use super::{
    EventIntent, Facts, Mode, Operation, RecordFacts, Releases, Settings, StaleValues, Verdict,
    Webhook,
};
use crate::actor::Writer;
use crate::helm::{RevisionIndex, Status};
use crate::text::{self, warning as short};
use crate::values::{self, StalePin, ValuesSummary};

/// At most this many pins are spelled out (the API server ignores warnings past 4 KiB).
const MAX_PINS: usize = 8;

pub(super) fn decide(
    webhook: Webhook,
    req: &Facts,
    record: &RecordFacts,
    releases: &impl Releases,
    settings: &Settings,
    writer: &Writer,
) -> Verdict {
    let actor = writer.actor.label();
    let v = Verdict::allow(actor);
    if settings.mode == Mode::Off || settings.stale_values == StaleValues::Off {
        return v;
    }
    let rev = match record {
        RecordFacts::Decoded(rev) => rev,
        // Never block Helm for a record we cannot read, but never skip the check unseen.
        RecordFacts::Undecodable(why) => {
            return Verdict::notice(
                webhook,
                actor,
                &format!(
                    "helm-guard: release record not checked for stale values: {}",
                    text::field(why)
                ),
            );
        }
    };
    if webhook == Webhook::Mutate
        || !matches!(req.operation, Operation::Create | Operation::Update)
        || !matches!(rev.status, Status::PendingUpgrade | Status::PendingRollback)
    {
        return v;
    }
    let history = releases.history(&rev.release);
    let others: Vec<&ValuesSummary> = history
        .iter()
        .filter(|r| r.revision != rev.revision)
        .map(|r| &r.values)
        .collect();
    // A cold start leaves superseded revisions unread; the fallback lookup reads them before
    // this runs. Should it not have (timed out, failed), say so rather than guess.
    if let Some(unread) = values::unread_in_analysis(&others, &rev.values) {
        return Verdict::notice(
            webhook,
            actor,
            &format!(
                "helm-guard: release record not checked for stale values: revision {unread} of release {} was not read yet",
                rev.release
            ),
        );
    }
    let pins = values::analyze(&others, &rev.values);
    if pins.is_empty() {
        return v;
    }
    answer(v, rev, &pins, releases, settings)
}

/// The answer naming the stale pins: warnings (or a denial), an audit annotation, and an
/// Event on each workload the release renders.
fn answer(
    mut v: Verdict,
    rev: &RevisionIndex,
    pins: &[StalePin],
    releases: &impl Releases,
    settings: &Settings,
) -> Verdict {
    v.stale_pins = pins.len();
    let release = &rev.release;
    let lines = lines(rev, pins);
    let summary: Vec<_> = pins
        .iter()
        .take(MAX_PINS)
        .map(|p| {
            json!({"path": p.path, "pinned": p.pinned, "since": p.since_revision,
                   "chartDefault": p.chart_default, "reuseValues": p.reuse_values})
        })
        .collect();
    v.audit_annotations
        .push(("stale-values".into(), json!(summary).to_string()));
    let note = short(&format!(
        "helm upgrade of release {release} (revision {}) re-applies persisted image values: {}",
        rev.revision,
        pins.iter()
            .take(MAX_PINS)
            .map(|p| format!(
                "{}={} (since revision {})",
                p.path, p.pinned, p.since_revision
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    // Recorded on the workloads the release renders: that is where people look.
    let targets = releases
        .release(release)
        .and_then(|view| view.deployed)
        .map(|d| {
            d.workloads
                .iter()
                .map(|w| w.key.clone())
                .collect::<Vec<_>>()
        })
        .unwrap_or_else(|| rev.workloads.iter().map(|w| w.key.clone()).collect());
    for target in targets {
        v.events.push(EventIntent {
            reason: "StaleImageValues",
            note: note.clone(),
            warning: true,
            target: Some(target),
        });
    }
    match settings.stale_values {
        StaleValues::Deny => {
            v.allowed = false;
            v.message = Some(format!(
                "{} (helm-guard --stale-values=deny: the upgrade is stopped before any workload changes)",
                lines.join(" ")
            ));
        }
        _ => v.warnings = lines,
    }
    v
}

/// What `helm upgrade` prints: a headline, two lines per pin (at most [`MAX_PINS`]), and how
/// many more there are.
fn lines(rev: &RevisionIndex, pins: &[StalePin]) -> Vec<String> {
    let release = &rev.release;
    let mut lines = vec![short(&format!(
        "helm-guard: release {} revision {} re-applies {} image value(s) persisted by an earlier revision:",
        release.name,
        rev.revision,
        pins.len()
    ))];
    for p in pins.iter().take(MAX_PINS) {
        lines.extend(p.warning_lines(&release.name, "<chart>"));
    }
    if pins.len() > MAX_PINS {
        lines.push(format!(
            "helm-guard: {} and {} more; see: helm-guard pins --release {}",
            text::ELLIPSIS,
            pins.len() - MAX_PINS,
            release.name
        ));
    }
    lines
}
