//! AdmissionReview in, AdmissionReview out: the adapter between the wire and the pure
//! decision.
//!
//! ```text
//! body ──parse (once)──> wire::Request ──facts──> policy::Facts ──decide──> Verdict
//!   │                        │                        │
//!   └─ not an admission.k8s.io/v1 review: Invalid     └─ hint for a fallback lookup (server)
//!                            └─ not a kind we judge, or an object we cannot read: NotChecked
//! ```
//!
//! A request ends in exactly one [`Outcome`]: judged by the policy, allowed without a
//! judgement (with the reason, and a warning when a person should know), or invalid (a 400-coded
//! answer: a real API server never sends one). The response is serialised once, from typed data,
//! at the edge ([`Reviewed::to_json`]). It is written here rather than through kube-core's
//! `AdmissionResponse`, whose `patch: Vec<u8>` serialises as an array of numbers (kube-rs
//! #1781) where `admission.k8s.io/v1` documents a base64 string.
//!
//! Error messages never quote the body: parser errors are reduced to their category and
//! position, because the body may be a Secret.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::value::RawValue;
use std::borrow::Cow;

use crate::helm::json_category;
use crate::policy::{self, Facts, Releases, Settings, Verdict, Webhook};
use crate::text;
use crate::workload::WorkloadKind;

pub(crate) mod facts;
pub(crate) mod wire;
pub use facts::{facts, workload_kind};
pub use wire::Request;

pub use crate::text::rfc3339;

/// The only AdmissionReview version the webhook configurations ask for.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Why a body could not be reviewed, or a request not checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewError {
    /// Not JSON (or YAML).
    #[error("body is not an AdmissionReview ({category} error at line {line}, column {column})")]
    Json {
        category: &'static str,
        line: usize,
        column: usize,
    },
    /// JSON, but not an `admission.k8s.io/v1` AdmissionReview.
    #[error("body is not an {API_VERSION} AdmissionReview (apiVersion {api_version}, kind {kind})")]
    NotV1 { api_version: String, kind: String },
    /// An AdmissionReview without a request.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// A request without a uid: no answer could be matched to it.
    #[error("request.uid is missing or empty")]
    NoUid,
    /// A field of the request has the wrong shape.
    #[error("request.{field} is not valid ({category} error)")]
    Field {
        field: &'static str,
        category: &'static str,
    },
    /// An object's metadata could not be read.
    #[error("the {which} object is not a valid Kubernetes object")]
    Object { which: &'static str },
    /// The object's pod spec could not be read.
    #[error("the {which} object's spec is not a valid {kind} spec")]
    Spec {
        which: &'static str,
        kind: WorkloadKind,
    },
    /// `managedFields` was needed (the request names no field manager, or claims to be Helm)
    /// and is not a list of entries.
    #[error("the {which} object's metadata.managedFields is not a list of entries")]
    ManagedFields { which: &'static str },
    /// A workload CREATE or UPDATE without an object.
    #[error("the {kind} request carries no object")]
    NoObject { kind: WorkloadKind },
    /// The object is of another kind than the request says.
    #[error("the {which} object is not a {kind}")]
    KindMismatch {
        which: &'static str,
        kind: WorkloadKind,
    },
}

/// What the handler logs and counts about a request, and what an Event needs to find its
/// object.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    pub uid: String,
    /// `group/version` of the object (`apps/v1`, `v1`).
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: &'static str,
    pub dry_run: bool,
    /// The stored object's uid (UPDATE), else the new object's, when known.
    pub object_uid: Option<String>,
}

/// Why an allowed request was not judged.
#[derive(Debug)]
pub enum NotChecked {
    /// Not a kind (or operation) helm-guard judges: allowed silently.
    NotGuarded,
    /// A request helm-guard should judge but cannot read: allowed with a warning, never
    /// denied (that would bypass `failurePolicy: Ignore`), and logged.
    Unreadable(ReviewError),
}

/// How one request ends.
#[derive(Debug)]
pub enum Outcome {
    Judged(Verdict),
    NotChecked(NotChecked),
    Invalid(ReviewError),
}

impl Outcome {
    /// The metrics and log label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Judged(v) => v.outcome().label(),
            Self::NotChecked(_) => "not-checked",
            Self::Invalid(_) => "error",
        }
    }

    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        match self {
            Self::Judged(v) => v.allowed,
            Self::NotChecked(_) => true,
            Self::Invalid(_) => false,
        }
    }

    /// The warnings sent with the answer (borrowed from the verdict when it has them).
    pub fn warnings(&self) -> std::borrow::Cow<'_, [String]> {
        match self {
            Self::Judged(v) => std::borrow::Cow::Borrowed(&v.warnings),
            Self::NotChecked(NotChecked::Unreadable(e)) => {
                std::borrow::Cow::Owned(vec![text::warning(&format!(
                    "helm-guard: not checked: {e}"
                ))])
            }
            _ => std::borrow::Cow::Borrowed(&[]),
        }
    }
}

/// The result of reviewing one body.
#[derive(Debug)]
pub struct Reviewed {
    pub meta: RequestMeta,
    pub outcome: Outcome,
}

/// A parsed request and its facts, before the decision: the server looks at the facts for a
/// fallback lookup between the two steps.
#[derive(Debug)]
pub struct Prepared {
    pub meta: RequestMeta,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    Facts(Box<Facts>),
    Done(Outcome),
}

impl Prepared {
    /// The facts to be judged, if it comes to a judgement.
    pub fn facts(&self) -> Option<&Facts> {
        match &self.stage {
            Stage::Facts(f) => Some(f),
            Stage::Done(_) => None,
        }
    }

    /// Decides (pure, microseconds) and ends the review.
    pub fn decide(
        self,
        webhook: Webhook,
        releases: &impl Releases,
        settings: &Settings,
        now: &str,
    ) -> Reviewed {
        let outcome = match self.stage {
            Stage::Facts(f) => {
                Outcome::Judged(policy::decide(webhook, &f, releases, settings, now))
            }
            Stage::Done(o) => o,
        };
        Reviewed {
            meta: self.meta,
            outcome,
        }
    }
}

fn json_error(e: &serde_json::Error) -> ReviewError {
    ReviewError::Json {
        category: json_category(e),
        line: e.line(),
        column: e.column(),
    }
}

/// Reads one field of the request, typed (its strings borrowed from the body where they can
/// be, as the typed pass reads them).
fn field<'a, T: serde::Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    name: &'static str,
) -> Result<Option<T>, ReviewError> {
    raw.map(|r| serde_json::from_str(r.get()))
        .transpose()
        .map_err(|e| ReviewError::Field {
            field: name,
            category: json_category(&e),
        })
}

/// A short, printable rendering of a raw JSON scalar from the body (apiVersion, kind).
fn quoted(raw: Option<&RawValue>) -> String {
    raw.map_or_else(|| "missing".to_owned(), |r| text::shown(r.get(), 64))
}

/// Parses an AdmissionReview from JSON. On failure, the uid when one could be read, and why.
///
/// A well-formed review is read in one typed pass; anything that pass does not take goes to
/// the careful reading, which says what is wrong (see `wire`).
pub fn parse(body: &[u8]) -> Result<Request<'_>, (String, ReviewError)> {
    match parse_typed(body) {
        Some(req) => Ok(req),
        None => parse_careful(body),
    }
}

/// The one-pass reading of a well-formed review; `None` when the careful one must decide.
fn parse_typed(body: &[u8]) -> Option<Request<'_>> {
    // JSON is UTF-8 throughout, ignored strings included; the parser checks only the strings
    // it keeps, so the whole body is checked once here (the careful reading names the error).
    let text = std::str::from_utf8(body).ok()?;
    let review: wire::TypedReview<'_> = serde_json::from_str(text).ok()?;
    if review.api_version != Some(API_VERSION) || review.kind != Some("AdmissionReview") {
        return None;
    }
    let r = review.request?;
    let kind = r.kind?;
    // A release record is read whole from its raw object, which only the careful path keeps.
    if kind.group.is_empty() && matches!(&*kind.kind, "Secret" | "ConfigMap") {
        return None;
    }
    Some(Request {
        uid: r.uid.filter(|u| !u.is_empty())?.into_cow(),
        kind,
        sub_resource: r.sub_resource.map(wire::Text::into_cow),
        name: r.name.map(wire::Text::into_cow).unwrap_or_default(),
        namespace: r.namespace.map(wire::Text::into_cow),
        operation: r.operation?,
        user_info: r.user_info.unwrap_or_default(),
        object: r.object.map(wire::Slot::Read),
        old_object: r.old_object.map(wire::Slot::Read),
        dry_run: r.dry_run,
        options: r.options,
    })
}

/// Reads the review field by field, so that a field of the wrong shape is named and the uid
/// still answered.
fn parse_careful(body: &[u8]) -> Result<Request<'_>, (String, ReviewError)> {
    let review: wire::RawReview<'_> =
        serde_json::from_slice(body).map_err(|e| (String::new(), json_error(&e)))?;
    let uid: String = review
        .request
        .as_ref()
        .and_then(|r| field::<String>(r.uid, "uid").ok().flatten())
        .unwrap_or_default();
    let fail = |e: ReviewError| (uid.clone(), e);
    let is = |raw: Option<&RawValue>, want: &str| {
        raw.and_then(|r| serde_json::from_str::<&str>(r.get()).ok()) == Some(want)
    };
    if !is(review.api_version, API_VERSION) || !is(review.kind, "AdmissionReview") {
        return Err(fail(ReviewError::NotV1 {
            api_version: quoted(review.api_version),
            kind: quoted(review.kind),
        }));
    }
    let raw = review.request.ok_or_else(|| fail(ReviewError::NoRequest))?;
    if uid.is_empty() {
        return Err(fail(ReviewError::NoUid));
    }
    let typed = || -> Result<Request<'_>, ReviewError> {
        Ok(Request {
            uid: Cow::Owned(uid.clone()),
            kind: field(raw.kind, "kind")?.ok_or(ReviewError::Field {
                field: "kind",
                category: "missing",
            })?,
            sub_resource: field(raw.sub_resource, "subResource")?,
            name: field(raw.name, "name")?.unwrap_or_default(),
            namespace: field(raw.namespace, "namespace")?,
            operation: field(raw.operation, "operation")?.ok_or(ReviewError::Field {
                field: "operation",
                category: "missing",
            })?,
            user_info: field(raw.user_info, "userInfo")?.unwrap_or_default(),
            object: raw.object.map(wire::Slot::Raw),
            old_object: raw.old_object.map(wire::Slot::Raw),
            dry_run: field(raw.dry_run, "dryRun")?,
            options: field(raw.options, "options")?,
        })
    };
    typed().map_err(fail)
}

/// Whether the two readings of `body` agree: `Some(true)` when the typed pass took it and the
/// careful reading prepares exactly the same request, `Some(false)` when they differ, `None`
/// when only the careful reading takes it. For tests and the fuzzer.
#[doc(hidden)]
pub fn readings_agree(body: &[u8], settings: &Settings) -> Option<bool> {
    let typed = parse_typed(body)?;
    let Ok(careful) = parse_careful(body) else {
        return Some(false);
    };
    let show = |req: &Request<'_>| format!("{:?}", prepare_request(req, settings));
    Some(show(&typed) == show(&careful))
}

fn meta_of(req: &Request<'_>) -> RequestMeta {
    let gvk = &req.kind;
    RequestMeta {
        uid: req.uid.clone().into_owned(),
        api_version: if gvk.group.is_empty() {
            gvk.version.clone().into_owned()
        } else {
            format!("{}/{}", gvk.group, gvk.version)
        },
        kind: gvk.kind.clone().into_owned(),
        namespace: req.namespace.as_deref().unwrap_or_default().to_owned(),
        name: req.name.clone().into_owned(),
        operation: req.operation.as_str(),
        dry_run: req.dry_run.unwrap_or(false),
        object_uid: None,
    }
}

/// Parses a body and lifts its facts: everything CPU-bound before the decision.
pub fn prepare(body: &[u8], settings: &Settings) -> Prepared {
    prepared(parse(body), settings)
}

/// [`prepare`] for a body [`prepare_typed`] has already declined: the careful reading alone,
/// which is what [`prepare`] would come to after a second, failing typed pass.
pub fn prepare_careful(body: &[u8], settings: &Settings) -> Prepared {
    prepared(parse_careful(body), settings)
}

fn prepared(parsed: Result<Request<'_>, (String, ReviewError)>, settings: &Settings) -> Prepared {
    match parsed {
        Ok(req) => prepare_request(&req, settings),
        Err((uid, e)) => Prepared {
            meta: RequestMeta {
                uid,
                ..RequestMeta::default()
            },
            stage: Stage::Done(Outcome::Invalid(e)),
        },
    }
}

/// [`prepare`] for a body the one-pass reading takes (a well-formed review of anything but
/// a Secret or ConfigMap); `None` for the rest, which [`prepare`] reads carefully.
pub fn prepare_typed(body: &[u8], settings: &Settings) -> Option<Prepared> {
    parse_typed(body).map(|req| prepare_request(&req, settings))
}

/// [`prepare`] for a parsed request.
pub fn prepare_request(req: &Request<'_>, settings: &Settings) -> Prepared {
    let mut meta = meta_of(req);
    let guarded = workload_kind(req).is_some()
        || (req.kind.group.is_empty() && matches!(&*req.kind.kind, "Secret" | "ConfigMap"));
    let stage = if !guarded {
        Stage::Done(Outcome::NotChecked(NotChecked::NotGuarded))
    } else {
        match facts(req, settings) {
            Ok(f) if f.kind.is_none() && f.record.is_none() => {
                Stage::Done(Outcome::NotChecked(NotChecked::NotGuarded))
            }
            Ok(f) => {
                if meta.name.is_empty() {
                    meta.name.clone_from(&f.name);
                }
                meta.object_uid.clone_from(&f.object_uid);
                Stage::Facts(Box::new(f))
            }
            Err(e) => Stage::Done(Outcome::NotChecked(NotChecked::Unreadable(e))),
        }
    };
    Prepared { meta, stage }
}

/// Reviews a raw JSON body: [`prepare`], then decide.
pub fn review_body(
    webhook: Webhook,
    body: &[u8],
    releases: &impl Releases,
    settings: &Settings,
    now: &str,
) -> Reviewed {
    prepare(body, settings).decide(webhook, releases, settings, now)
}

impl Reviewed {
    /// The AdmissionReview answering this request, serialised once.
    pub fn to_json(&self) -> Vec<u8> {
        let warnings = self.outcome.warnings();
        let invalid_message;
        let mut response = wire::Response {
            uid: &self.meta.uid,
            allowed: self.outcome.allowed(),
            status: None,
            warnings: &warnings,
            audit_annotations: BTreeMap::new(),
            patch_type: None,
            patch: None,
        };
        match &self.outcome {
            Outcome::Judged(v) => {
                if !v.allowed {
                    response.status = Some(wire::Status {
                        code: 403,
                        reason: "Forbidden",
                        message: v.message.as_deref().unwrap_or_default(),
                    });
                }
                response.audit_annotations = v
                    .audit_annotations
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if !v.patch.0.is_empty() {
                    let bytes = serde_json::to_vec(&v.patch).unwrap_or_default();
                    response.patch_type = Some("JSONPatch");
                    response.patch = Some(STANDARD.encode(bytes));
                }
            }
            Outcome::Invalid(e) => {
                invalid_message = format!("helm-guard: {e}");
                response.status = Some(wire::Status {
                    code: 400,
                    reason: "BadRequest",
                    message: &invalid_message,
                });
            }
            Outcome::NotChecked(_) => {}
        }
        // Sized up front: grown from empty, the buffer was reallocated a dozen times per answer.
        let estimate = 256
            + warnings.iter().map(|w| w.len() + 8).sum::<usize>()
            + response.status.as_ref().map_or(0, |s| s.message.len() * 2)
            + response.patch.as_ref().map_or(0, String::len)
            + response
                .audit_annotations
                .iter()
                .map(|(k, v)| k.len() + v.len() * 2 + 8)
                .sum::<usize>();
        let mut out = Vec::with_capacity(estimate);
        let review = wire::ResponseReview {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response,
        };
        match serde_json::to_writer(&mut out, &review) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// The denial or error message, if the request is not allowed.
    pub fn message(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Judged(v) => v.message.clone(),
            Outcome::Invalid(e) => Some(format!("helm-guard: {e}")),
            Outcome::NotChecked(_) => None,
        }
    }
}

#[cfg(test)]
mod tests;
