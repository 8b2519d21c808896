//! The judgement of live objects: what a workload runs now, against what its release renders.
//!
//! Admission judges a write; this judges a state. Both use the same rules so that `scan` never
//! disagrees with the webhook: the release and the rendered workload come from the same
//! [`resolve`](super::resolve::resolve) (Helm annotations, then the reverse map, then the owner chain),
//! images are compared with [`Image::same_as`](crate::image::Image::same_as), and the reference
//! is the newest deployed revision (a pending one is not trusted: nothing is writing now).
//!
//! ```text
//! live workload ─resolve─> release, rendered workload (newest deployed revision)
//!   each container:  rendered, image differs            → drift
//!                    not rendered, image owned by a
//!                    non-Helm managedFields entry       → added
//!   break-glass annotation with a reason                → the same findings, as break-glass
//!   ReplicaSet of a Deployment, Job of a CronJob: not judged (the owner is)
//!   Pod: judged only where its image differs from both the chart and its owner's live
//!        template (an in-place edit); otherwise the owner carries the finding
//! ```
//!
//! Pure: no kube, tokio or axum. The live object arrives as a small typed view
//! ([`LiveWorkload`]), never a whole object, so the same function serves a file scan and a
//! watch-fed inventory. Only names, image references, managers, times and the break-glass
//! reason reach a [`Finding`].

use std::collections::HashMap;
use std::sync::Arc;

use super::mark::{self, MarkEntry};
use super::resolve::{Resolved, Subject, resolve};
use super::{ImageOwner, Owner, Releases};
use crate::helm::{ReleaseKey, RevisionIndex, WorkloadKey};
use crate::text::clip;
use crate::workload::{Container, WorkloadKind, find};

/// What a finding needs of a live workload, and no more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveWorkload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    /// `meta.helm.sh/release-name` / `-namespace`.
    pub release_annotation: Option<ReleaseKey>,
    /// The break-glass annotation (`helm-guard.io/allow-drift`).
    pub allow_drift: Option<String>,
    /// The drift mark (`helm-guard.io/drift`) left by the mutating webhook.
    pub drift_mark: Option<String>,
    /// Controller owner references.
    pub owners: Vec<Owner>,
    /// The `pod-template-hash` label (Pods and ReplicaSets of a Deployment).
    pub pod_template_hash: Option<String>,
    /// Containers then init containers of the pod template (or of the Pod).
    pub containers: Vec<Container>,
    /// The `managedFields` entries that own a container's `image`, with manager and time.
    pub image_owners: Vec<ImageOwner>,
}

impl LiveWorkload {
    pub fn key(&self) -> WorkloadKey {
        WorkloadKey::new(self.kind, &self.namespace, &self.name)
    }
}

/// The live pod templates of owners, for judging Pods.
pub trait Templates {
    fn template(&self, key: &WorkloadKey) -> Option<&[Container]>;
}

impl Templates for HashMap<WorkloadKey, Vec<Container>> {
    fn template(&self, key: &WorkloadKey) -> Option<&[Container]> {
        self.get(key).map(Vec::as_slice)
    }
}

/// No owner templates known: owned Pods are not judged.
impl Templates for () {
    fn template(&self, _: &WorkloadKey) -> Option<&[Container]> {
        None
    }
}

/// What kind of finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingKind {
    /// A rendered container runs an image the chart does not render.
    Drift,
    /// A container the chart does not render, added by a writer that is not Helm.
    Added,
    /// Drift or an added container on an object carrying the break-glass annotation.
    BreakGlass,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drift => "drift",
            Self::Added => "added",
            Self::BreakGlass => "break-glass",
        }
    }
}

/// One container that does not run what its release renders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub workload: WorkloadKey,
    pub container: String,
    pub init: bool,
    pub live_image: String,
    /// `None`: the chart does not render this container.
    pub chart_image: Option<String>,
    pub release: ReleaseKey,
    pub revision: u32,
    /// When the image was set: the `managedFields` time of the entry owning it (else the
    /// drift mark's time).
    pub since: Option<String>,
    /// Who set it: that entry's manager (else the drift mark's).
    pub manager: Option<String>,
    /// The user the drift mark recorded.
    pub user: Option<String>,
    /// The break-glass reason (the annotation, else the drift mark's).
    pub reason: Option<String>,
}

/// The judgement of one live workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Judgement {
    /// The release and revision it was judged against; `None` when no deployed revision
    /// renders it or its owner (not Helm's, or not judged).
    pub against: Option<(ReleaseKey, u32)>,
    pub findings: Vec<Finding>,
}

/// Judges one live workload against the newest deployed revision of its release.
pub fn judge(
    live: &LiveWorkload,
    releases: &impl Releases,
    templates: &impl Templates,
    helm_managers: &[String],
) -> Judgement {
    if judged_by_owner(live) {
        return Judgement::default();
    }
    let key = live.key();
    let Some((resolved, revision)) = deployed(live, &key, releases) else {
        return Judgement::default();
    };
    let Some(rendered) = revision.workload(&resolved.reference) else {
        return Judgement::default();
    };
    let against = Some((resolved.release.clone(), revision.revision));
    // A Pod of a controller: only an in-place edit is the Pod's own finding. Without its
    // owner's live template that cannot be told apart from the owner's drift, so it is left
    // to the owner.
    let owner_template = if live.kind == WorkloadKind::Pod && resolved.reference != key {
        match owner_template(live, &resolved.reference, templates) {
            Some(t) => Some(t),
            None => {
                return Judgement {
                    against,
                    findings: Vec::new(),
                };
            }
        }
    } else {
        None
    };
    let reference = Reference {
        key: &key,
        release: &resolved.release,
        revision: revision.revision,
        rendered: &rendered.containers,
        owner_template,
    };
    Judgement {
        against,
        findings: findings(live, &reference, helm_managers),
    }
}

/// A ReplicaSet's template is its Deployment's at some rollout (old ones keep old images)
/// and a Job's is immutable: the Deployment or CronJob carries the finding.
fn judged_by_owner(live: &LiveWorkload) -> bool {
    matches!(live.kind, WorkloadKind::ReplicaSet | WorkloadKind::Job)
        && live
            .owners
            .iter()
            .any(|o| matches!(o.kind.as_str(), "Deployment" | "CronJob"))
}

/// The release a live workload belongs to, the workload in it that renders the object
/// (itself, or its owner), and the release's newest deployed revision.
fn deployed(
    live: &LiveWorkload,
    key: &WorkloadKey,
    releases: &impl Releases,
) -> Option<(Resolved, Arc<RevisionIndex>)> {
    let subject = Subject {
        key,
        release_annotation: live.release_annotation.as_ref(),
        owners: &live.owners,
        pod_template_hash: live.pod_template_hash.as_deref(),
    };
    let resolved = resolve(subject, releases)?;
    let revision = releases.release(&resolved.release)?.deployed?;
    Some((resolved, revision))
}

/// What the containers of one live workload are judged against.
struct Reference<'a> {
    /// The live workload's own key.
    key: &'a WorkloadKey,
    release: &'a ReleaseKey,
    revision: u32,
    /// The containers its release renders for it (or for its owner).
    rendered: &'a [Container],
    /// For a Pod of a controller: its owner's live template.
    owner_template: Option<&'a [Container]>,
}

/// The findings for the containers of a live workload.
fn findings(
    live: &LiveWorkload,
    reference: &Reference<'_>,
    helm_managers: &[String],
) -> Vec<Finding> {
    let marks: Vec<MarkEntry> = mark::entries(live.drift_mark.as_deref());
    let break_glass = live
        .allow_drift
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| clip(r, 200).to_owned());

    let mut findings = Vec::new();
    for c in &live.containers {
        let chart = find(reference.rendered, &c.name);
        let Some(kind) = difference(live.kind, c, chart, reference.rendered) else {
            continue;
        };
        if let Some(t) = reference.owner_template
            && find(t, &c.name).is_none_or(|o| o.image.same_as(&c.image))
        {
            continue; // runs what its owner's template says: the owner's finding, if any
        }
        let owner = image_owner(&live.image_owners, &c.name, helm_managers);
        if kind == FindingKind::Added && owner.is_none_or(|o| is_helm(&o.manager, helm_managers)) {
            // Added by Helm (a webhook injecting at install) or by no one we can name.
            continue;
        }
        let mark = marks
            .iter()
            .find(|m| m.container == *c.name && m.live_image == c.image.as_str());
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let reason = break_glass
            .clone()
            .or_else(|| mark.and_then(|m| m.reason.clone()));
        findings.push(Finding {
            kind: if break_glass.is_some() {
                FindingKind::BreakGlass
            } else {
                kind
            },
            workload: reference.key.clone(),
            container: c.name.to_string(),
            init: c.init,
            live_image: c.image.to_string(),
            chart_image: chart.map(|c| c.image.to_string()),
            release: reference.release.clone(),
            revision: reference.revision,
            since: owner
                .and_then(|o| nonempty(&o.time))
                .or_else(|| mark.and_then(|m| nonempty(&m.time))),
            manager: owner
                .and_then(|o| nonempty(&o.manager))
                .or_else(|| mark.and_then(|m| m.manager.clone())),
            user: mark.and_then(|m| nonempty(&m.user)),
            reason,
        });
    }
    findings
}

/// How a live container differs from what the chart renders (`chart`: the rendered container
/// of that name), before asking who changed it; `None` when that alone rules a finding out.
fn difference(
    kind: WorkloadKind,
    c: &Container,
    chart: Option<&Container>,
    rendered: &[Container],
) -> Option<FindingKind> {
    match chart {
        Some(chart) if c.image.same_as(&chart.image) => None,
        Some(_) => Some(FindingKind::Drift),
        // Containers cannot be added to a Pod after creation; a Pod's extra containers
        // were injected when it was created.
        None if kind == WorkloadKind::Pod => None,
        // Renamed or added with an image the chart renders for this workload: no drift,
        // as in admission.
        None if rendered.iter().any(|r| r.image.same_as(&c.image)) => None,
        None => Some(FindingKind::Added),
    }
}

/// The live template of a Pod's owner: its direct controller (ReplicaSet, Job, …) if known,
/// else the workload it was resolved to (the Deployment, CronJob, …).
fn owner_template<'a>(
    live: &LiveWorkload,
    reference: &WorkloadKey,
    templates: &'a impl Templates,
) -> Option<&'a [Container]> {
    live.owners
        .iter()
        .find_map(|o| {
            let kind = WorkloadKind::from_group_kind(group_of(&o.kind), &o.kind)?;
            templates.template(&WorkloadKey::new(kind, &live.namespace, &o.name))
        })
        .or_else(|| templates.template(reference))
}

fn group_of(kind: &str) -> &'static str {
    match kind {
        "Job" | "CronJob" => "batch",
        "Pod" => "",
        _ => "apps",
    }
}

fn is_helm(manager: &str, helm_managers: &[String]) -> bool {
    helm_managers.iter().any(|h| h == manager)
}

/// The entry owning a container's image; a non-Helm owner wins (server-side apply lets
/// several managers co-own a field, and the one that is not Helm is the one that changed it).
fn image_owner<'a>(
    owners: &'a [ImageOwner],
    container: &str,
    helm_managers: &[String],
) -> Option<&'a ImageOwner> {
    let mut all = owners.iter().filter(|o| o.container == container);
    let first = all.clone().next();
    all.find(|o| !is_helm(&o.manager, helm_managers)).or(first)
}

#[cfg(test)]
mod tests;
