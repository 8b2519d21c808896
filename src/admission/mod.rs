//! AdmissionReview in, AdmissionReview out: the adapter between the wire and the pure
//! decision.
//!
//! Requests are parsed into the small typed view of [`wire`] (objects stay raw JSON until the
//! request's kind says how to read them); the facts the policy needs are lifted out into a
//! [`policy::Request`]. Responses are written here rather than through kube-core's
//! `AdmissionResponse`, whose `patch: Vec<u8>` serialises as an array of numbers (kube-rs
//! #1781) where `admission.k8s.io/v1` documents a base64 string.
//!
//! Error messages never quote the body: parser errors are reduced to their category and
//! position, because the body may be a Secret.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::actor::{ManagedEntry, WriterFacts};
use crate::helm::{ReleaseKey, json_category};
use crate::policy::{
    self, ALLOW_DRIFT, DRIFT_MARK, ImageOwner, Operation, Owner, RELEASE_NAME, RELEASE_NAMESPACE,
    RecordFacts, Releases, Settings, Verdict, Webhook,
};
use crate::store::index_record;
use crate::workload::{Container, Spec, WorkloadKind};

pub(crate) mod wire;
pub use wire::Request;

/// Why a body could not be reviewed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewError {
    /// Not JSON (or YAML), or not shaped like an AdmissionReview.
    #[error("body is not an AdmissionReview ({category} error at line {line}, column {column})")]
    Json {
        category: &'static str,
        line: usize,
        column: usize,
    },
    /// An AdmissionReview without a request.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// An object's metadata could not be read.
    #[error("the {which} object is not a valid Kubernetes object")]
    Object { which: &'static str },
    /// The object's pod spec could not be read.
    #[error("the {which} object's spec is not a valid {kind} spec")]
    Spec {
        which: &'static str,
        kind: WorkloadKind,
    },
}

/// What the handler needs to log and count about a request.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    pub uid: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: &'static str,
    pub dry_run: bool,
}

/// The result of reviewing one body.
#[derive(Debug)]
pub struct Reviewed {
    /// The AdmissionReview to send back.
    pub review: Value,
    pub meta: RequestMeta,
    /// `None` when the body could not be reviewed (the review then carries the error).
    pub verdict: Option<Verdict>,
}

fn json_error(e: &serde_json::Error) -> ReviewError {
    ReviewError::Json {
        category: json_category(e),
        line: e.line(),
        column: e.column(),
    }
}

/// Parses an AdmissionReview from JSON.
pub fn parse(body: &[u8]) -> Result<Request, ReviewError> {
    let review: wire::Review = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
    review.request.ok_or(ReviewError::NoRequest)
}

/// Parses an AdmissionReview already read into a JSON value (from YAML, say).
pub fn parse_value(value: Value) -> Result<Request, ReviewError> {
    let bytes = serde_json::to_vec(&value).map_err(|e| json_error(&e))?;
    parse(&bytes)
}

fn operation_name(op: wire::Operation) -> &'static str {
    match op {
        wire::Operation::Create => "CREATE",
        wire::Operation::Update => "UPDATE",
        wire::Operation::Delete => "DELETE",
        wire::Operation::Connect => "CONNECT",
    }
}

fn meta_of(req: &Request) -> RequestMeta {
    RequestMeta {
        uid: req.uid.clone(),
        kind: req.kind.kind.clone(),
        namespace: req.namespace.clone().unwrap_or_default(),
        name: req.name.clone(),
        operation: operation_name(req.operation),
        dry_run: req.dry_run.unwrap_or(false),
    }
}

/// An object of the request, read as far as the guard needs: metadata, and for a workload
/// the containers of its pod template.
struct Read {
    meta: wire::Meta,
    containers: Vec<Container>,
}

fn read(
    raw: Option<&RawValue>,
    kind: Option<WorkloadKind>,
    which: &'static str,
) -> Result<Option<Read>, ReviewError> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.get() == "null" {
        return Ok(None);
    }
    Ok(Some(match kind {
        Some(kind) => {
            let obj: wire::Object<Spec> =
                serde_json::from_str(raw.get()).map_err(|_| ReviewError::Spec { which, kind })?;
            Read {
                containers: obj.spec.unwrap_or_default().containers(kind),
                meta: obj.metadata,
            }
        }
        None => {
            let obj: wire::Object =
                serde_json::from_str(raw.get()).map_err(|_| ReviewError::Object { which })?;
            Read {
                meta: obj.metadata,
                containers: Vec::new(),
            }
        }
    }))
}

fn managed(meta: Option<&wire::Meta>) -> Vec<ManagedEntry> {
    meta.and_then(|m| m.managed_fields.as_ref())
        .map(|entries| {
            entries
                .iter()
                .map(|e| ManagedEntry {
                    manager: e.manager.clone().unwrap_or_default(),
                    operation: e.operation.clone().unwrap_or_default(),
                    subresource: e.subresource.clone().unwrap_or_default(),
                    time: e.time.clone().unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Who owns each container's `image` field in an object, per its `managedFields`
/// (`f:spec…f:containers.k:{"name":"x"}.f:image`, at the kind's pod-spec depth).
pub(crate) fn image_owners(meta: Option<&wire::Meta>, kind: WorkloadKind) -> Vec<ImageOwner> {
    let path: &[&str] = match kind {
        WorkloadKind::Pod => &["f:spec"],
        WorkloadKind::CronJob => &["f:spec", "f:jobTemplate", "f:spec", "f:template", "f:spec"],
        _ => &["f:spec", "f:template", "f:spec"],
    };
    let mut out = Vec::new();
    let entries = meta.and_then(|m| m.managed_fields.as_ref());
    for e in entries.into_iter().flatten() {
        let Some(fields) = e
            .fields_v1
            .as_ref()
            .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
        else {
            continue;
        };
        let Some(pod) = path.iter().try_fold(&fields, |v, k| v.get(*k)) else {
            continue;
        };
        for list in ["f:containers", "f:initContainers"] {
            let Some(Value::Object(items)) = pod.get(list) else {
                continue;
            };
            for (key, item) in items {
                let Some(name) = key
                    .strip_prefix("k:")
                    .and_then(|k| serde_json::from_str::<Value>(k).ok())
                    .and_then(|k| k.get("name").and_then(Value::as_str).map(str::to_owned))
                else {
                    continue;
                };
                if item.get("f:image").is_some() {
                    out.push(ImageOwner {
                        container: name,
                        manager: e.manager.clone().unwrap_or_default(),
                        time: e.time.clone().unwrap_or_default(),
                    });
                }
            }
        }
    }
    out
}

/// The release record an admission request carries, if it is one (a Secret of type
/// `helm.sh/release.v1` or a ConfigMap labelled `owner=helm`), decoded within `settings`'
/// limits. Only these objects are read whole.
fn record_of(req: &Request, settings: &Settings) -> Option<RecordFacts> {
    let core = req.kind.group.is_empty() && req.sub_resource.as_deref().unwrap_or("").is_empty();
    if !core || !matches!(req.kind.kind.as_str(), "Secret" | "ConfigMap") {
        return None;
    }
    let mut obj: Value = serde_json::from_str(req.object.as_ref()?.get()).ok()?;
    if !obj.is_object() {
        return None;
    }
    obj["kind"] = json!(req.kind.kind);
    if obj.pointer("/metadata/namespace").is_none()
        && let Some(ns) = &req.namespace
        && obj.get("metadata").is_some_and(Value::is_object)
    {
        obj["metadata"]["namespace"] = json!(ns);
    }
    Some(match index_record(&obj, settings.record_limits)? {
        Ok(rev) => RecordFacts::Decoded(rev),
        Err(e) => RecordFacts::Undecodable(e.to_string()),
    })
}

/// Lifts the facts the policy needs out of an admission request.
pub fn facts(req: &Request, settings: &Settings) -> Result<policy::Request, ReviewError> {
    // Subresources (scale, status, ephemeralcontainers) never change a chart's images.
    let kind = if req.sub_resource.as_deref().unwrap_or("").is_empty() {
        WorkloadKind::from_group_kind(&req.kind.group, &req.kind.kind)
    } else {
        None
    };
    let object = read(req.object.as_deref(), kind, "new")?;
    let old = read(req.old_object.as_deref(), kind, "old")?;
    let meta = object.as_ref().map(|o| &o.meta);
    let old_meta = old.as_ref().map(|o| &o.meta);
    let annotations: Option<&BTreeMap<String, String>> = meta.and_then(|m| m.annotations.as_ref());
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).cloned();
    let namespace = req
        .namespace
        .clone()
        .or_else(|| meta.and_then(|m| m.namespace.clone()))
        .unwrap_or_default();
    let name = if req.name.is_empty() {
        meta.and_then(|m| m.name.clone()).unwrap_or_default()
    } else {
        req.name.clone()
    };
    let release_annotation = annotation(RELEASE_NAME).map(|rel| {
        let ns = annotation(RELEASE_NAMESPACE).unwrap_or_else(|| namespace.clone());
        ReleaseKey::new(&ns, &rel)
    });
    let owner_refs = meta.and_then(|m| m.owner_references.as_ref());
    let controllers: Vec<Owner> = owner_refs
        .map(|refs| {
            let has_controller = refs.iter().any(|r| r.controller == Some(true));
            refs.iter()
                .filter(|r| !has_controller || r.controller == Some(true))
                .map(|r| Owner {
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let field_manager = req.options.as_ref().and_then(|o| o.field_manager.clone());
    Ok(policy::Request {
        operation: match req.operation {
            wire::Operation::Create => Operation::Create,
            wire::Operation::Update => Operation::Update,
            wire::Operation::Delete => Operation::Delete,
            wire::Operation::Connect => Operation::Connect,
        },
        kind,
        namespace,
        name,
        writer: WriterFacts {
            user: req.user_info.username.clone().unwrap_or_default(),
            groups: req.user_info.groups.clone().unwrap_or_default(),
            field_manager,
            new_managed: managed(meta),
            old_managed: managed(old_meta),
        },
        release_annotation,
        allow_drift: annotation(ALLOW_DRIFT),
        drift_mark: annotation(DRIFT_MARK),
        has_annotations: annotations.is_some(),
        owners: controllers,
        pod_template_hash: meta
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get("pod-template-hash"))
            .cloned(),
        old_image_owners: kind.map(|k| image_owners(old_meta, k)).unwrap_or_default(),
        old_allow_drift: old_meta
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(ALLOW_DRIFT))
            .cloned(),
        old_drift_mark: old_meta
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(DRIFT_MARK))
            .cloned(),
        record: record_of(req, settings),
        containers: object.map(|o| o.containers).unwrap_or_default(),
        old_containers: if kind.is_some() {
            old.map(|o| o.containers)
        } else {
            None
        },
    })
}

/// The AdmissionReview answering `uid` with `verdict`.
pub fn response(uid: &str, verdict: &Verdict) -> Value {
    let mut rsp = json!({"uid": uid, "allowed": verdict.allowed});
    if !verdict.allowed {
        rsp["status"] = json!({
            "code": 403,
            "reason": "Forbidden",
            "message": verdict.message.clone().unwrap_or_default(),
        });
    }
    if !verdict.warnings.is_empty() {
        rsp["warnings"] = json!(verdict.warnings);
    }
    if !verdict.audit_annotations.is_empty() {
        let map: BTreeMap<&str, &str> = verdict
            .audit_annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        rsp["auditAnnotations"] = json!(map);
    }
    if !verdict.patch.is_empty() {
        let bytes = serde_json::to_vec(&verdict.patch).unwrap_or_default();
        rsp["patchType"] = json!("JSONPatch");
        rsp["patch"] = json!(STANDARD.encode(bytes));
    }
    wrap(rsp)
}

/// The AdmissionReview for a body that could not be reviewed: not allowed, code 400, with
/// the uid when one can be found at all (the API server matches responses by uid).
pub fn invalid(uid: &str, message: &str) -> Value {
    wrap(json!({
        "uid": uid,
        "allowed": false,
        "status": {"code": 400, "reason": "BadRequest", "message": format!("helm-guard: {message}")},
    }))
}

fn wrap(response: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// Best effort: the request uid of a body that failed to parse as a whole.
pub fn salvage_uid(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Outer {
        request: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        uid: Option<String>,
    }
    serde_json::from_slice::<Outer>(body)
        .ok()
        .and_then(|o| o.request)
        .and_then(|r| r.uid)
        .unwrap_or_default()
}

/// Reviews a parsed request.
pub fn review_request(
    webhook: Webhook,
    req: &Request,
    releases: &impl Releases,
    settings: &Settings,
    now: &str,
) -> Reviewed {
    let meta = meta_of(req);
    match facts(req, settings) {
        Ok(facts) => {
            let verdict = policy::decide(webhook, &facts, releases, settings, now);
            Reviewed {
                review: response(&meta.uid, &verdict),
                meta,
                verdict: Some(verdict),
            }
        }
        // An object the API server accepted but whose spec we cannot read is not the client's
        // fault: never deny for it (that would bypass failurePolicy: Ignore); say so instead.
        Err(e @ (ReviewError::Spec { .. } | ReviewError::Object { .. })) => {
            let mut verdict = Verdict::allow("none");
            verdict
                .warnings
                .push(policy::short(&format!("helm-guard: not checked: {e}")));
            Reviewed {
                review: response(&meta.uid, &verdict),
                meta,
                verdict: None,
            }
        }
        Err(e) => Reviewed {
            review: invalid(&meta.uid, &e.to_string()),
            meta,
            verdict: None,
        },
    }
}

/// Reviews a raw JSON body.
pub fn review_body(
    webhook: Webhook,
    body: &[u8],
    releases: &impl Releases,
    settings: &Settings,
    now: &str,
) -> Reviewed {
    match parse(body) {
        Ok(req) => review_request(webhook, &req, releases, settings, now),
        Err(e) => {
            let uid = salvage_uid(body);
            Reviewed {
                review: invalid(&uid, &e.to_string()),
                meta: RequestMeta {
                    uid,
                    ..RequestMeta::default()
                },
                verdict: None,
            }
        }
    }
}

/// RFC 3339 UTC time of `t`, second precision (the format of `managedFields` times).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm), valid for the Unix era onwards.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        let at = |s: u64| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_687_200), "2026-11-26T10:00:00Z");
    }

    #[test]
    fn unreadable_bodies_get_a_reasoned_invalid_review() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "truncated"),
            (b"{not json CANARY", "syntax"),
            (
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                "no request",
            ),
            (br#"{"request":{"uid":"u-1","password":"CANARY"}}"#, "shape"),
        ];
        let idx = crate::store::Index::default();
        for (body, want) in cases {
            let r = review_body(
                Webhook::Validate,
                body,
                &idx,
                &Settings::new(policy::Mode::Enforce),
                "t",
            );
            let rsp = &r.review["response"];
            assert_eq!(rsp["allowed"], false);
            assert_eq!(rsp["status"]["code"], 400);
            let msg = rsp["status"]["message"].as_str().expect("message");
            assert!(msg.contains(want), "{msg}");
            assert!(!r.review.to_string().contains("CANARY"));
        }
        assert_eq!(salvage_uid(br#"{"request":{"uid":"u-1","x":1}}"#), "u-1");
    }
}
