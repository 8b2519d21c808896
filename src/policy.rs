//! The decision: a plain function of (request facts, release view, settings) → [`Verdict`].
//!
//! No kube, axum or tokio here: the HTTP layer turns an AdmissionReview into [`Request`]
//! facts, the store answers [`Releases`] lookups from memory, and this module decides.
//!
//! ```text
//! resolve: object ─rendered by a release?─> that workload in that release
//!                 └─not rendered─> owner chain (Pod→ReplicaSet→Deployment, Pod→Job→CronJob, …)
//! writer:  exempt (Kubernetes itself) | Helm (trusted only with a pending revision) | manual
//! compare: each container whose image changed, against the image the reference revision
//!          renders (newest deployed; the pending one during a trusted Helm write)
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
use serde_json::{Value, json};

use crate::actor::{Actor, ActorSettings, Writer, WriterFacts, classify};
use crate::helm::{ReleaseKey, RevisionIndex, WorkloadKey};
use crate::image;
use crate::workload::{Container, WorkloadKind, find};

/// Break-glass annotation: set on the edited object with a reason.
pub const ALLOW_DRIFT: &str = "helm-guard.io/allow-drift";
/// The mark left on an object that runs an image its chart does not render.
pub const DRIFT_MARK: &str = "helm-guard.io/drift";
/// Helm's ownership annotations.
pub const RELEASE_NAME: &str = "meta.helm.sh/release-name";
pub const RELEASE_NAMESPACE: &str = "meta.helm.sh/release-namespace";

/// Longest warning the API server passes on untruncated.
pub const WARNING_MAX: usize = 256;
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
    pub record_limits: crate::helm::Limits,
}

impl Settings {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            missing_release: MissingRelease::Allow,
            stale_values: StaleValues::Warn,
            actors: ActorSettings::default(),
            record_limits: crate::helm::Limits::default(),
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
pub struct Request {
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
    /// The record did not decode (the reason names the object, never its content).
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
}

/// One container that runs (or would run) an image its chart does not render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub container: String,
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

/// The outcome for metrics.
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
    pub patch: Vec<Value>,
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
            patch: Vec::new(),
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

/// Where the object's reference images come from.
#[derive(Clone, Debug)]
struct Resolved {
    release: ReleaseKey,
    /// The rendered workload the object is judged against (itself, or its owner).
    reference: WorkloadKey,
}

/// The one decision function.
pub fn decide(
    webhook: Webhook,
    req: &Request,
    releases: &impl Releases,
    settings: &Settings,
    now: &str,
) -> Verdict {
    let writer = classify(&req.writer, &settings.actors);
    if let Some(record) = &req.record {
        return record::decide(
            webhook,
            req,
            record,
            releases,
            settings,
            writer.actor.label(),
        );
    }
    let Some(kind) = req.kind else {
        return Verdict::allow(writer.actor.label());
    };
    if !matches!(req.operation, Operation::Create | Operation::Update) || settings.mode == Mode::Off
    {
        return Verdict::allow(writer.actor.label());
    }
    if writer.actor == Actor::Exempt {
        return Verdict::allow(writer.actor.label());
    }
    let key = WorkloadKey::new(kind, &req.namespace, &req.name);
    let Some(resolved) = resolve(&key, req, releases) else {
        return missing_release(webhook, req, releases, settings, &writer);
    };
    let Some(view) = releases.release(&resolved.release) else {
        return missing_release(webhook, req, releases, settings, &writer);
    };

    // A Helm claim is trusted only while Helm has a pending revision: it always writes one
    // before touching workloads. Then the pending manifest is what Helm is rolling out.
    let trusted_helm = writer.actor == Actor::Helm && view.pending.is_some();
    let actor_label = match &writer.actor {
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
        let mut v = Verdict::allow(actor_label);
        v.warnings.push(short(&format!(
            "helm-guard: release {} has no deployed revision yet; image change not checked",
            resolved.release
        )));
        return v;
    };
    let Some(rendered) = reference.workload(&resolved.reference) else {
        // The reference revision does not render it (removed from the chart, or renamed):
        // never judged against a missing manifest entry.
        return Verdict::allow(actor_label);
    };

    let old = req.old_containers.as_deref();
    let mut violations = Vec::new();
    let mut current = Vec::new();
    for c in &req.containers {
        let Some(chart) = find(&rendered.containers, &c.name) else {
            continue; // a container the chart does not render (an injected sidecar)
        };
        if c.image.same_as(&chart.image) {
            continue;
        }
        let drift = Drift {
            container: c.name.to_string(),
            chart_image: chart.image.to_string(),
            live_image: c.image.to_string(),
        };
        let changed = match old.map(|o| find(o, &c.name)) {
            None | Some(None) => true, // CREATE, or a container added in this edit
            Some(Some(prev)) => !prev.image.same_as(&c.image),
        };
        if changed {
            violations.push(drift.clone());
        }
        current.push(drift);
    }

    let ctx = Context {
        req,
        release: &resolved.release,
        revision: reference.revision,
        writer: &writer,
        now,
    };
    let reason = req
        .allow_drift
        .as_deref()
        .filter(|r| req.old_allow_drift.as_deref() != Some(*r))
        .map(str::trim)
        .filter(|r| !r.is_empty());
    let mut v = Verdict::allow(actor_label);
    v.drifts = violations.clone();
    if trusted_helm && webhook == Webhook::Validate {
        v.warnings = overwritten_drift(req);
    }
    if violations.is_empty() {
        if webhook == Webhook::Mutate && current.is_empty() && req.drift_mark.is_some() {
            v.patch = vec![json!({"op": "remove", "path": mark_path()})];
        }
        return v;
    }
    match (reason, settings.mode) {
        (Some(reason), _) => {
            for d in &violations {
                v.warnings.push(short(&format!(
                    "helm-guard: break-glass ({}): {} runs {}, chart renders {}",
                    clip(reason, 40),
                    d.container,
                    image::short(&d.live_image),
                    image::delta(&d.live_image, &d.chart_image),
                )));
            }
            v.audit_annotations
                .push(("allow-drift".into(), clip(reason, 200).to_owned()));
            v.audit_annotations
                .push(("drift".into(), ctx.mark_json(&violations, Some(reason))));
            v.events.push(EventIntent {
                reason: "BreakGlassDrift",
                note: short(&format!(
                    "image drift from release {} allowed by {ALLOW_DRIFT}: {}",
                    resolved.release,
                    summary(&violations)
                )),
                warning: true,
                target: None,
            });
            if webhook == Webhook::Mutate {
                v.patch = ctx.mark_patch(&current, &violations, Some(reason));
            }
        }
        (None, Mode::Enforce) => {
            v.allowed = false;
            v.message = Some(ctx.denial(&violations));
            v.events.push(EventIntent {
                reason: "ImageDriftDenied",
                note: short(&format!(
                    "denied image drift from release {}: {}",
                    resolved.release,
                    summary(&violations)
                )),
                warning: true,
                target: None,
            });
            if webhook == Webhook::Mutate {
                // The validating webhook denies; the mutating one must not pretend otherwise.
                v.allowed = true;
                v.message = None;
                v.events.clear();
            }
        }
        (None, _) => {
            for d in &violations {
                v.warnings.push(short(&format!(
                    "helm-guard: {} runs {}; release {} rev {} renders {}",
                    d.container,
                    image::short(&d.live_image),
                    resolved.release.name,
                    reference.revision,
                    image::delta(&d.live_image, &d.chart_image),
                )));
            }
            v.warnings.push(short(&format!(
                "helm-guard: the next helm upgrade reverts it; to keep it, set it in the values of {}",
                resolved.release.name
            )));
            v.audit_annotations
                .push(("drift".into(), ctx.mark_json(&violations, None)));
            v.events.push(EventIntent {
                reason: "ImageDriftAudited",
                note: short(&format!(
                    "image drift from release {}: {}",
                    resolved.release,
                    summary(&violations)
                )),
                warning: true,
                target: None,
            });
            if webhook == Webhook::Mutate {
                v.patch = ctx.mark_patch(&current, &violations, None);
            }
        }
    }
    if webhook == Webhook::Mutate {
        // kubectl prints each warning once per webhook, and the audit log would carry each
        // annotation twice: the validating webhook speaks, the mutating one only marks.
        v.warnings.clear();
        v.events.clear();
        v.audit_annotations.clear();
    } else if v.warnings.len() > MAX_WARNINGS {
        // The API server ignores warnings past 4 KiB in total.
        let more = v.warnings.len() - MAX_WARNINGS;
        v.warnings.truncate(MAX_WARNINGS);
        v.warnings.push(format!(
            "helm-guard: … and {more} more; see the audit annotation"
        ));
    }
    v
}

fn missing_release(
    webhook: Webhook,
    req: &Request,
    releases: &impl Releases,
    settings: &Settings,
    writer: &Writer,
) -> Verdict {
    let mut v = Verdict::allow(writer.actor.label());
    let Some(named) = &req.release_annotation else {
        return v; // not Helm-managed, as far as anyone can tell
    };
    if releases.release(named).is_some() {
        // The release exists but renders neither the object nor its owner: not ours to judge.
        return v;
    }
    let image_changed = match &req.old_containers {
        None => true,
        Some(old) => req
            .containers
            .iter()
            .any(|c| find(old, &c.name).is_none_or(|o| !o.image.same_as(&c.image))),
    };
    if !image_changed || webhook == Webhook::Mutate {
        return v;
    }
    let text = format!(
        "helm-guard: release {named} not found (no Helm release record); image change not checked"
    );
    match settings.missing_release {
        MissingRelease::Allow => v.warnings.push(short(&text)),
        MissingRelease::Deny => {
            v.allowed = false;
            v.message = Some(format!(
                "{text}. This cluster requires Helm-managed workloads to have a readable release."
            ));
        }
    }
    v
}

/// Warnings for a Helm write that replaces images someone set by hand: which image goes, what
/// replaces it, who set it and when (and the user and reason the drift mark recorded).
fn overwritten_drift(req: &Request) -> Vec<String> {
    let Some(old) = &req.old_containers else {
        return Vec::new();
    };
    let marks: Vec<MarkEntry> = req
        .old_drift_mark
        .as_deref()
        .or(req.drift_mark.as_deref())
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default();
    let mut out = Vec::new();
    for c in &req.containers {
        let Some(prev) = find(old, &c.name) else {
            continue;
        };
        if prev.image.same_as(&c.image) {
            continue;
        }
        let mark = marks.iter().find(|m| m.container == *c.name);
        let owner = req
            .old_image_owners
            .iter()
            .find(|o| o.container == *c.name && !o.manager.starts_with("helm"));
        let who = match (mark, owner) {
            (Some(m), _) => {
                let mut w = format!("set by {}", m.manager.as_deref().unwrap_or("someone"));
                if !m.user.is_empty() {
                    w.push_str(&format!(" ({})", clip(&m.user, 40)));
                }
                if !m.time.is_empty() {
                    w.push_str(&format!(" at {}", m.time));
                }
                if let Some(r) = &m.reason {
                    w.push_str(&format!(", reason: {}", clip(r, 40)));
                }
                w
            }
            (None, Some(o)) if o.time.is_empty() => format!("set by {}", o.manager),
            (None, Some(o)) => format!("set by {} at {}", o.manager, o.time),
            (None, None) => continue,
        };
        out.push(short(&format!(
            "helm-guard: helm replaces {} {} ({who}) with {}",
            c.name,
            image::short(prev.image.as_str()),
            image::delta(prev.image.as_str(), c.image.as_str()),
        )));
    }
    out
}

/// Finds the release and rendered workload an object is judged against.
fn resolve(key: &WorkloadKey, req: &Request, releases: &impl Releases) -> Option<Resolved> {
    let direct = |k: &WorkloadKey| {
        releases.renderer_of(k).map(|release| Resolved {
            release,
            reference: k.clone(),
        })
    };
    // The object's own Helm annotations win when that release renders it: a record written
    // in another namespace cannot take the object over by rendering the same name.
    if let Some(named) = &req.release_annotation
        && let Some(view) = releases.release(named)
        && [view.deployed, view.pending]
            .iter()
            .flatten()
            .any(|r| r.workload(key).is_some())
    {
        return Some(Resolved {
            release: named.clone(),
            reference: key.clone(),
        });
    }
    if let Some(r) = direct(key) {
        return Some(r);
    }
    for owner in &req.owners {
        let ns = &req.namespace;
        let found = match owner.kind.as_str() {
            "ReplicaSet" => {
                // Deployment `web` owns ReplicaSet `web-<pod-template-hash>`.
                let rs = WorkloadKey::new(WorkloadKind::ReplicaSet, ns, &owner.name);
                direct(&rs).or_else(|| {
                    deployment_of(&owner.name, req.pod_template_hash.as_deref())
                        .and_then(|d| direct(&WorkloadKey::new(WorkloadKind::Deployment, ns, d)))
                })
            }
            "Deployment" => direct(&WorkloadKey::new(WorkloadKind::Deployment, ns, &owner.name)),
            "StatefulSet" => direct(&WorkloadKey::new(
                WorkloadKind::StatefulSet,
                ns,
                &owner.name,
            )),
            "DaemonSet" => direct(&WorkloadKey::new(WorkloadKind::DaemonSet, ns, &owner.name)),
            "CronJob" => direct(&WorkloadKey::new(WorkloadKind::CronJob, ns, &owner.name)),
            "Job" => direct(&WorkloadKey::new(WorkloadKind::Job, ns, &owner.name)).or_else(|| {
                // CronJob `backup` creates Job `backup-<scheduled minute>`.
                cronjob_of(&owner.name)
                    .and_then(|c| direct(&WorkloadKey::new(WorkloadKind::CronJob, ns, c)))
            }),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn deployment_of<'a>(replicaset: &'a str, hash: Option<&str>) -> Option<&'a str> {
    match hash {
        Some(h) if !h.is_empty() => replicaset.strip_suffix(h)?.strip_suffix('-'),
        _ => replicaset.rsplit_once('-').map(|(d, _)| d),
    }
}

fn cronjob_of(job: &str) -> Option<&str> {
    let (name, suffix) = job.rsplit_once('-')?;
    (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())).then_some(name)
}

struct Context<'a> {
    req: &'a Request,
    release: &'a ReleaseKey,
    revision: u32,
    writer: &'a Writer,
    now: &'a str,
}

/// One entry of the drift mark.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct MarkEntry {
    container: String,
    chart_image: String,
    live_image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manager: Option<String>,
    #[serde(default)]
    user: String,
    #[serde(default)]
    time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl MarkEntry {
    /// Same drift, whoever recorded it and whenever.
    fn same_drift(&self, other: &MarkEntry) -> bool {
        self.container == other.container
            && self.chart_image == other.chart_image
            && self.live_image == other.live_image
            && self.reason == other.reason
    }
}

impl Context<'_> {
    fn entry(&self, d: &Drift, reason: Option<&str>) -> MarkEntry {
        MarkEntry {
            container: d.container.clone(),
            chart_image: d.chart_image.clone(),
            live_image: d.live_image.clone(),
            manager: self.writer.manager.clone(),
            user: self.req.writer.user.clone(),
            time: self.now.to_owned(),
            reason: reason.map(|r| clip(r, 200).to_owned()),
        }
    }

    fn mark_json(&self, drifts: &[Drift], reason: Option<&str>) -> String {
        let entries: Vec<MarkEntry> = drifts.iter().map(|d| self.entry(d, reason)).collect();
        serde_json::to_string(&entries).unwrap_or_default()
    }

    /// The patch that makes the mark describe every container now drifting: entries for this
    /// request's violations are new; entries for drift recorded earlier and still present
    /// are kept as they were. No patch when the mark already says the same.
    fn mark_patch(
        &self,
        current: &[Drift],
        violations: &[Drift],
        reason: Option<&str>,
    ) -> Vec<Value> {
        let existing: Vec<MarkEntry> = self
            .req
            .drift_mark
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default();
        let entries: Vec<MarkEntry> = current
            .iter()
            .map(|d| {
                let fresh = self.entry(d, if violations.contains(d) { reason } else { None });
                let keep = existing.iter().find(|e| {
                    if violations.contains(d) {
                        e.same_drift(&fresh)
                    } else {
                        e.container == fresh.container && e.live_image == fresh.live_image
                    }
                });
                keep.cloned().unwrap_or(fresh)
            })
            .collect();
        if self.req.drift_mark.is_some() && entries == existing {
            return Vec::new();
        }
        let value = serde_json::to_string(&entries).unwrap_or_default();
        if self.req.has_annotations {
            vec![json!({"op": "add", "path": mark_path(), "value": value})]
        } else {
            vec![
                json!({"op": "add", "path": "/metadata/annotations", "value": {DRIFT_MARK: value}}),
            ]
        }
    }

    fn denial(&self, drifts: &[Drift]) -> String {
        let mut msg = format!(
            "helm-guard: image drift from Helm release {} (revision {}) denied:",
            self.release, self.revision
        );
        for d in drifts {
            msg.push_str(&format!(
                " container {:?} requested {}, the chart renders {};",
                d.container, d.live_image, d.chart_image
            ));
        }
        msg.pop();
        msg.push_str(&format!(
            ". Change the image in the values of release {} and run helm upgrade, or, in an \
             emergency, add the annotation {ALLOW_DRIFT}=\"<reason>\" in the same change.",
            self.release.name
        ));
        msg
    }
}

fn mark_path() -> String {
    format!(
        "/metadata/annotations/{}",
        DRIFT_MARK.replace('~', "~0").replace('/', "~1")
    )
}

fn summary(drifts: &[Drift]) -> String {
    drifts
        .iter()
        .map(|d| format!("{} {} (chart {})", d.container, d.live_image, d.chart_image))
        .collect::<Vec<_>>()
        .join(", ")
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A warning the API server will not truncate: ≤ 256 bytes, with an ellipsis when cut.
pub fn short(s: &str) -> String {
    if s.len() <= WARNING_MAX {
        return s.to_owned();
    }
    format!("{}…", clip(s, WARNING_MAX - '…'.len_utf8()))
}

pub mod live;
mod record;
#[cfg(test)]
mod tests;
