//! The one assessment of a workload write: against which release and revision it is judged,
//! who is writing, and which containers run an image the chart does not render.
//!
//! Drift is a manual writer making a Helm workload run an image its chart does not render, by
//! any of three edits, each judged the same way:
//!
//! | edit                       | judged as                                                  |
//! |----------------------------|------------------------------------------------------------|
//! | change a container's image | the chart's image for that container name                  |
//! | rename a container         | a new name: its image must be one the workload's chart renders |
//! | add a container            | the same: an image the chart renders for this workload     |
//!
//! A container already in `oldObject` with the same image is not "added" — that is how a
//! sidecar injected when the object was created stays out of it — and Pods created by
//! controllers never get here (Kubernetes' own controllers are exempt writers). A container
//! the chart does not render and that was let through earlier (audit, break-glass) stays
//! drift as long as the drift mark lists it, so the mark is not dropped while it still runs.

use super::resolve::{Subject, resolve};
use super::{
    Drift, Facts, MissingRelease, Mode, Operation, Releases, Settings, Verdict, Webhook, mark,
};
use crate::actor::{Actor, Writer};
use crate::helm::{ReleaseKey, WorkloadKey};
use crate::text;
use crate::workload::{Container, find};

/// A write judged against a rendered workload.
#[derive(Clone, Debug)]
pub struct Assessment {
    pub release: ReleaseKey,
    pub revision: u32,
    /// The writer's metric label (`helm-unverified` for a Helm claim without a pending
    /// revision).
    pub actor: &'static str,
    /// A Helm write during a pending revision, judged against that revision.
    pub trusted_helm: bool,
    /// The writer's field manager, as recorded in the mark.
    pub manager: Option<String>,
    /// Drift this request introduces (changed, renamed or added containers).
    pub violations: Vec<Drift>,
    /// All drift the object would carry after this request (for the mark).
    pub current: Vec<Drift>,
    /// A break-glass reason set in this very edit, trimmed.
    pub reason: Option<String>,
}

/// The assessment, or an answer reached before there was anything to compare.
#[derive(Debug)]
pub enum Assessed {
    Answer(Verdict),
    Judged(Assessment),
}

/// Assesses a workload write.
pub fn assess(
    webhook: Webhook,
    facts: &Facts,
    releases: &impl Releases,
    settings: &Settings,
    writer: &Writer,
) -> Assessed {
    let label = writer.actor.label();
    let Some(kind) = facts.kind else {
        return Assessed::Answer(Verdict::allow(label));
    };
    if !matches!(facts.operation, Operation::Create | Operation::Update)
        || settings.mode == Mode::Off
        || writer.actor == Actor::Exempt
    {
        return Assessed::Answer(Verdict::allow(label));
    }
    let key = WorkloadKey::new(kind, &facts.namespace, &facts.name);
    let subject = Subject {
        key: &key,
        release_annotation: facts.release_annotation.as_ref(),
        owners: &facts.owners,
        pod_template_hash: facts.pod_template_hash.as_deref(),
    };
    let Some((resolved, view)) =
        resolve(subject, releases).and_then(|r| releases.release(&r.release).map(|view| (r, view)))
    else {
        return Assessed::Answer(missing_release(webhook, facts, releases, settings, label));
    };

    // A Helm claim is trusted only while Helm has a pending revision: it always writes one
    // before touching workloads. Then the pending manifest is what Helm is rolling out.
    let trusted_helm = writer.actor == Actor::Helm && view.pending.is_some();
    let actor = match &writer.actor {
        Actor::Helm if !trusted_helm => "helm-unverified",
        other => other.label(),
    };
    let reference = if trusted_helm {
        view.pending.as_ref()
    } else {
        view.deployed.as_ref()
    };
    let Some(reference) = reference else {
        // Installing (no deployed revision yet) and not Helm: nothing to compare with.
        let why = releases
            .broken(&resolved.release)
            .map(|e| format!(" ({})", text::field(&e)))
            .unwrap_or_default();
        return Assessed::Answer(Verdict::notice(
            webhook,
            actor,
            &format!(
                "helm-guard: release {} has no deployed revision{why}; image change not checked",
                resolved.release
            ),
        ));
    };
    let Some(rendered) = reference.workload(&resolved.reference) else {
        // The reference revision does not render it (removed from the chart, or renamed):
        // never judged against a missing manifest entry.
        return Assessed::Answer(Verdict::allow(actor));
    };
    let (violations, current) = compare(facts, &rendered.containers);
    let reason = facts
        .allow_drift
        .as_deref()
        .filter(|r| facts.old_allow_drift.as_deref() != Some(*r))
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    Assessed::Judged(Assessment {
        release: resolved.release,
        revision: reference.revision,
        actor,
        trusted_helm,
        manager: writer.manager.clone(),
        violations,
        current,
        reason,
    })
}

/// The drift a request introduces, and all drift the object carries after it.
pub fn compare(facts: &Facts, chart: &[Container]) -> (Vec<Drift>, Vec<Drift>) {
    let old = facts.old_containers.as_deref();
    let marked = mark::entries(facts.drift_mark.as_deref());
    let mut violations = Vec::new();
    let mut current = Vec::new();
    for c in &facts.containers {
        let rendered = find(chart, &c.name);
        let chart_image = match rendered {
            Some(r) if c.image.same_as(&r.image) => continue,
            Some(r) => text::field(r.image.as_str()),
            // Renamed or added: an image the chart renders for this workload is no drift.
            None if chart.iter().any(|r| r.image.same_as(&c.image)) => continue,
            None => String::new(),
        };
        let drift = Drift {
            container: text::field(&c.name),
            chart_image,
            live_image: text::field(c.image.as_str()),
        };
        let changed = match old.map(|o| find(o, &c.name)) {
            None | Some(None) => true, // CREATE, or a container added (or renamed) in this edit
            Some(Some(prev)) => !prev.image.same_as(&c.image),
        };
        let still_marked = || {
            marked
                .iter()
                .any(|m| m.container == drift.container && m.live_image == drift.live_image)
        };
        if changed {
            violations.push(drift.clone());
            current.push(drift);
        } else if rendered.is_some() || still_marked() {
            // Drift from before this edit. An unrendered container that was there already is
            // drift only when it was let through as drift (the mark says so); otherwise it was
            // injected when the object was created.
            current.push(drift);
        }
    }
    (violations, current)
}

fn missing_release(
    webhook: Webhook,
    facts: &Facts,
    releases: &impl Releases,
    settings: &Settings,
    actor: &'static str,
) -> Verdict {
    let allow = Verdict::allow(actor);
    let Some(named) = &facts.release_annotation else {
        return allow; // not Helm-managed, as far as anyone can tell
    };
    if releases.release(named).is_some() {
        // The release exists but renders neither the object nor its owner: not ours to judge.
        return allow;
    }
    let image_changed = match &facts.old_containers {
        None => true,
        Some(old) => facts
            .containers
            .iter()
            .any(|c| find(old, &c.name).is_none_or(|o| !o.image.same_as(&c.image))),
    };
    if !image_changed || webhook == Webhook::Mutate {
        return allow;
    }
    let named_shown = text::field(&named.to_string());
    let text = match releases.broken(named) {
        Some(why) => format!(
            "helm-guard: release {named_shown} could not be read ({}); image change not checked",
            text::field(&why)
        ),
        None => format!(
            "helm-guard: release {named_shown} not found (no Helm release record); image change not checked"
        ),
    };
    match settings.missing_release {
        MissingRelease::Allow => Verdict::notice(webhook, actor, &text),
        MissingRelease::Deny => {
            let mut v = allow;
            v.allowed = false;
            v.message = Some(format!(
                "{text}. This cluster requires Helm-managed workloads to have a readable release."
            ));
            v
        }
    }
}
