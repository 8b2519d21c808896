//! The decision: a plain function of (request facts, release view, settings) → [`Verdict`].
//!
//! No kube, axum or tokio here: the HTTP layer turns an AdmissionReview into [`Facts`], the
//! store answers [`Releases`] lookups from memory, and this module decides. Its rooms:
//! [`resolve`] (which rendered workload an object is judged against: itself or its owner
//! chain), [`drift`] (the one assessment of a request: which containers run what the chart
//! does not render), [`answer`] (the validating and the mutating answers built from that
//! assessment), [`mark`] (the `helm-guard.io/drift` annotation and its JSON patch), [`record`]
//! (release records passing through: stale persisted values).
//!
//! ```text
//! resolve: object ─rendered by a release?─> that workload in that release
//!                 └─not rendered─> owner chain (Pod→ReplicaSet→Deployment, Pod→Job→CronJob, …)
//! writer:  exempt (Kubernetes itself) | Helm (trusted only with a pending revision) | manual
//! compare: each container whose image changed — or that was renamed or added — against what
//!          the reference revision renders (newest deployed; the pending one during a trusted
//!          Helm write)
//! verdict: enforce → deny · audit → allow + warn + mark · off → allow · break-glass → allow + record
//! ```
//!
//! The drift mark (`helm-guard.io/drift`) is kept by the mutating path: set when drift is let
//! through (audit, break-glass), removed when the object matches the chart again, and left
//! alone when nothing changed, so a second invocation on its own output yields no patch.
//! Only image references, names and the break-glass reason ever reach a message; release
//! values never do — they are not even in the index this module reads.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::actor::{ActorSettings, WriterFacts, classify};
use crate::helm::{ReleaseKey, RevisionIndex, WorkloadKey};
use crate::workload::{Container, WorkloadKind};

pub mod answer;
pub mod drift;
pub mod live;
pub mod mark;
mod overwritten;
mod record;
pub mod resolve;
#[cfg(test)]
mod tests;

/// Break-glass annotation: set on the edited object with a reason.
pub const ALLOW_DRIFT: &str = "helm-guard.io/allow-drift";
/// The mark left on an object that runs an image its chart does not render.
pub const DRIFT_MARK: &str = "helm-guard.io/drift";
/// Helm's ownership annotations.
pub const RELEASE_NAME: &str = "meta.helm.sh/release-name";
pub const RELEASE_NAMESPACE: &str = "meta.helm.sh/release-namespace";

/// Most warnings one response carries (the API server keeps 4 KiB of them in total).
const MAX_WARNINGS: usize = 12;

/// How a namespace is guarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Audit,
    Off,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enforce" => Some(Self::Enforce),
            "audit" => Some(Self::Audit),
            "off" => Some(Self::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
            Self::Off => "off",
        }
    }
}

/// Which webhook is asking: the validating one decides, the mutating one keeps the mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    Validate,
    Mutate,
}

impl Webhook {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Mutate => "mutate",
        }
    }
}

/// What to do when an object names a release the store does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingRelease {
    Allow,
    Deny,
}

/// What to do when `helm upgrade` writes a revision that re-applies stale image values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleValues {
    Warn,
    Deny,
    Off,
}

/// Settings of a decision.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub missing_release: MissingRelease,
    pub stale_values: StaleValues,
    pub actors: ActorSettings,
    /// Bounds on release records decoded from admission requests.
    pub record_limits: crate::helm::DecodeLimits,
}

impl Settings {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            missing_release: MissingRelease::Allow,
            stale_values: StaleValues::Warn,
            actors: ActorSettings::default(),
            record_limits: crate::helm::DecodeLimits::default(),
        }
    }
}

/// The admission operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

/// A controller owner reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// The facts of one admission request, extracted by the HTTP layer.
#[derive(Clone, Debug)]
pub struct Facts {
    pub operation: Operation,
    /// `None` for objects that are not workloads (the guard lets them pass).
    pub kind: Option<WorkloadKind>,
    pub namespace: String,
    pub name: String,
    pub writer: WriterFacts,
    /// `meta.helm.sh/release-name` / `-namespace` of the new object.
    pub release_annotation: Option<ReleaseKey>,
    /// The break-glass reason, if the new object carries the annotation.
    pub allow_drift: Option<String>,
    /// The break-glass annotation of the old object: a reason counts only when set (or
    /// changed) in this very edit, so one break-glass does not open the object for good.
    pub old_allow_drift: Option<String>,
    /// The drift mark on the new object, if any.
    pub drift_mark: Option<String>,
    /// Whether the new object has an annotations map at all (for JSON patch paths).
    pub has_annotations: bool,
    /// Controller owner references of the new object.
    pub owners: Vec<Owner>,
    /// The `pod-template-hash` label, which links Pods and ReplicaSets to a Deployment.
    pub pod_template_hash: Option<String>,
    pub containers: Vec<Container>,
    /// Containers of the old object (UPDATE).
    pub old_containers: Option<Vec<Container>>,
    /// Who set each container's image in the old object, per its `managedFields`.
    pub old_image_owners: Vec<ImageOwner>,
    /// The drift mark on the old object, if any.
    pub old_drift_mark: Option<String>,
    /// The object is a Helm release record (Secret or ConfigMap).
    pub record: Option<RecordFacts>,
    /// The uid of the stored object, so Events land on it (`kubectl describe` finds them).
    pub object_uid: Option<String>,
}

/// A manager that owns a container's `image` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageOwner {
    pub container: String,
    pub manager: String,
    pub time: String,
}

/// A release record in an admission request.
#[derive(Clone, Debug)]
pub enum RecordFacts {
    Decoded(Arc<RevisionIndex>),
    /// The record did not decode: the object's name and the error's category, never its
    /// content.
    Undecodable(String),
}

/// A release as the store sees it now.
#[derive(Clone, Debug, Default)]
pub struct ReleaseView {
    /// The newest `deployed` revision.
    pub deployed: Option<Arc<RevisionIndex>>,
    /// A `pending-*` revision, if Helm is in the middle of an operation.
    pub pending: Option<Arc<RevisionIndex>>,
}

/// Read access to the release index. Implemented by the store; sync and in-memory.
pub trait Releases {
    fn release(&self, key: &ReleaseKey) -> Option<ReleaseView>;
    /// Every known revision of a release.
    fn history(&self, key: &ReleaseKey) -> Vec<Arc<RevisionIndex>>;
    /// The release whose deployed or pending revision renders this workload.
    fn renderer_of(&self, key: &WorkloadKey) -> Option<ReleaseKey>;
    /// Why a release's records could not be read, when its newest record did not decode
    /// (the object and the error's category; never content).
    fn broken(&self, _key: &ReleaseKey) -> Option<String> {
        None
    }
}

/// One container that runs (or would run) an image its chart does not render. Fields are as
/// shown to people: printable and bounded ([`crate::text::field`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub container: String,
    /// What the chart renders for this container; empty when it renders no container of
    /// that name (a container added or renamed by hand).
    pub chart_image: String,
    pub live_image: String,
}

/// An Event to record on the object, after the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventIntent {
    pub reason: &'static str,
    pub note: String,
    pub warning: bool,
    /// The object to record it on; `None` for the request's own object.
    pub target: Option<WorkloadKey>,
}

/// What a verdict amounts to, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Warned,
    Denied,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Warned => "warned",
            Self::Denied => "denied",
        }
    }
}

/// The decision, ready to be put into an AdmissionResponse.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub allowed: bool,
    /// Denial message (status.message), code 403.
    pub message: Option<String>,
    pub warnings: Vec<String>,
    /// Keys without a prefix: the API server prefixes them with the webhook name.
    pub audit_annotations: Vec<(String, String)>,
    /// RFC 6902 operations (mutating path only).
    pub patch: json_patch::Patch,
    pub events: Vec<EventIntent>,
    pub actor: &'static str,
    pub drifts: Vec<Drift>,
    /// Stale persisted image values found in a release revision being written.
    pub stale_pins: usize,
}

impl Verdict {
    /// An allowing verdict with nothing to say.
    pub fn allow(actor: &'static str) -> Self {
        Self {
            allowed: true,
            message: None,
            warnings: Vec::new(),
            audit_annotations: Vec::new(),
            patch: json_patch::Patch(Vec::new()),
            events: Vec::new(),
            actor,
            drifts: Vec::new(),
            stale_pins: 0,
        }
    }

    pub fn outcome(&self) -> Outcome {
        if !self.allowed {
            Outcome::Denied
        } else if self.warnings.is_empty() {
            Outcome::Allowed
        } else {
            Outcome::Warned
        }
    }
}

impl Verdict {
    /// Allowed, with one warning for the person at the terminal (validating webhook only:
    /// the mutating one never speaks, or kubectl would print every line twice).
    fn notice(webhook: Webhook, actor: &'static str, text: &str) -> Self {
        let mut v = Self::allow(actor);
        if webhook == Webhook::Validate {
            v.warnings.push(crate::text::warning(text));
        }
        v
    }
}

/// The one decision function: who writes, against what, and the answer of this webhook.
pub fn decide(
    webhook: Webhook,
    facts: &Facts,
    releases: &impl Releases,
    settings: &Settings,
    now: &str,
) -> Verdict {
    let writer = classify(&facts.writer, &settings.actors);
    if let Some(record) = &facts.record {
        return record::decide(webhook, facts, record, releases, settings, &writer);
    }
    match drift::assess(webhook, facts, releases, settings, &writer) {
        drift::Assessed::Answer(v) => v,
        drift::Assessed::Judged(a) => {
            let mut v = match webhook {
                Webhook::Validate => answer::validate(&a, facts, settings, now),
                Webhook::Mutate => answer::mutate(&a, facts, settings, now),
            };
            // Moved, not copied: the answer is built from them first.
            v.drifts = a.violations;
            v
        }
    }
}
