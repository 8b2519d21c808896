//! From the typed request to [`Facts`]: what the policy needs to know about one write, lifted
//! out of the raw objects — metadata, owner references, container images old and new, who owns
//! each image field in `managedFields`, and a release record decoded within its limits.

use serde_json::{Value, json};

use super::ReviewError;
use std::borrow::Cow;

use super::wire::{self, Request, Slot};
use crate::actor::{ManagedEntry, WriterFacts};
use crate::helm::ReleaseKey;
use crate::helm::record::index_record;
use crate::policy::{
    ALLOW_DRIFT, DRIFT_MARK, Facts, ImageOwner, Operation, Owner, RELEASE_NAME, RELEASE_NAMESPACE,
    RecordFacts, Settings,
};
use crate::workload::{Container, WorkloadKind};

/// An object of the request, read as far as the guard needs: metadata, and for a workload
/// the containers of its pod template.
struct Read<'a> {
    meta: Cow<'a, wire::Meta<'a>>,
    containers: Vec<Container>,
}

fn read<'a>(
    slot: Option<&'a Slot<'a>>,
    kind: Option<WorkloadKind>,
    which: &'static str,
    known: &[Container],
) -> Result<Option<Read<'a>>, ReviewError> {
    let raw = match slot {
        None => return Ok(None),
        Some(Slot::Read(obj)) => return read_object(obj, kind, which, known).map(Some),
        Some(Slot::Raw(raw)) if raw.get() == "null" => return Ok(None),
        Some(Slot::Raw(raw)) => raw,
    };
    Ok(Some(match kind {
        Some(kind) => {
            let obj: wire::Object<'_, wire::RequestSpec<'_>> =
                serde_json::from_str(raw.get()).map_err(|_| ReviewError::Spec { which, kind })?;
            check_kind(&obj, kind, which)?;
            Read {
                containers: obj.spec.unwrap_or_default().containers_reusing(kind, known),
                meta: Cow::Owned(obj.metadata),
            }
        }
        None => {
            let obj: wire::Object<'_> =
                serde_json::from_str(raw.get()).map_err(|_| ReviewError::Object { which })?;
            Read {
                meta: Cow::Owned(obj.metadata),
                containers: Vec::new(),
            }
        }
    }))
}

/// An object the typed pass has already read: the same checks as a raw one.
fn read_object<'a>(
    obj: &'a wire::Object<'a, wire::RequestSpec<'a>>,
    kind: Option<WorkloadKind>,
    which: &'static str,
    known: &[Container],
) -> Result<Read<'a>, ReviewError> {
    let containers = match kind {
        Some(kind) => {
            check_kind(obj, kind, which)?;
            obj.spec
                .as_ref()
                .map(|s| s.containers_reusing(kind, known))
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    Ok(Read {
        meta: Cow::Borrowed(&obj.metadata),
        containers,
    })
}

fn check_kind<S>(
    obj: &wire::Object<'_, S>,
    kind: WorkloadKind,
    which: &'static str,
) -> Result<(), ReviewError> {
    if obj.kind.as_deref().is_some_and(|k| k != kind.as_str()) {
        return Err(ReviewError::KindMismatch { which, kind });
    }
    Ok(())
}

/// A string the body may have left borrowed, owned (empty when absent).
fn owned(s: &Option<wire::Text<'_>>) -> String {
    s.as_deref().unwrap_or_default().to_owned()
}

/// The `managedFields` entries of an object (none when it has none), owned.
fn managed(
    meta: Option<&wire::Meta<'_>>,
    which: &'static str,
) -> Result<Vec<ManagedEntry>, ReviewError> {
    let Some(meta) = meta else {
        return Ok(Vec::new());
    };
    let entries = meta
        .managed_fields()
        .map_err(|_| ReviewError::ManagedFields { which })?;
    Ok(entries
        .iter()
        .map(|e| ManagedEntry {
            manager: owned(&e.manager),
            operation: owned(&e.operation),
            subresource: owned(&e.subresource),
            time: owned(&e.time),
        })
        .collect())
}

/// Who owns each container's `image` field in an object, per its `managedFields`
/// (`f:spec…f:containers.k:{"name":"x"}.f:image`, at the kind's pod-spec depth).
///
/// An error when `managedFields` is not a list of entries.
pub(crate) fn image_owners(
    meta: Option<&wire::Meta<'_>>,
    kind: WorkloadKind,
) -> Result<Vec<ImageOwner>, serde_json::Error> {
    let path: &[&str] = match kind {
        WorkloadKind::Pod => &["f:spec"],
        WorkloadKind::CronJob => &["f:spec", "f:jobTemplate", "f:spec", "f:template", "f:spec"],
        _ => &["f:spec", "f:template", "f:spec"],
    };
    let mut out = Vec::new();
    let entries = match meta {
        Some(m) => m.managed_fields()?,
        None => Vec::new(),
    };
    for e in &entries {
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
                        manager: owned(&e.manager),
                        time: owned(&e.time),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The release record an admission request carries, if it is one (a Secret of type
/// `helm.sh/release.v1` or a ConfigMap labelled `owner=helm`), decoded within `settings`'
/// limits. Only these objects are read whole.
fn record_of(req: &Request<'_>, settings: &Settings) -> Option<RecordFacts> {
    let core = req.kind.group.is_empty() && req.sub_resource.as_deref().unwrap_or("").is_empty();
    if !core || !matches!(&*req.kind.kind, "Secret" | "ConfigMap") {
        return None;
    }
    // Secrets and ConfigMaps always come through the careful reading, object kept raw.
    let Some(Slot::Raw(raw)) = &req.object else {
        return None;
    };
    let mut obj: Value = serde_json::from_str(raw.get()).ok()?;
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

/// The workload kind a request is about: `None` for other kinds and for subresources (scale,
/// status, ephemeralcontainers never change a chart's images).
pub fn workload_kind(req: &Request<'_>) -> Option<WorkloadKind> {
    if req.sub_resource.as_deref().unwrap_or("").is_empty() {
        WorkloadKind::from_group_kind(&req.kind.group, &req.kind.kind)
    } else {
        None
    }
}

/// Lifts the facts the policy needs out of an admission request. A workload CREATE or UPDATE
/// must carry a readable object of the request's kind.
pub fn facts(req: &Request<'_>, settings: &Settings) -> Result<Facts, ReviewError> {
    let kind = workload_kind(req);
    let object = read(req.object.as_ref(), kind, "new", &[])?;
    let known = object.as_ref().map_or(&[][..], |o| &o.containers[..]);
    let old = read(req.old_object.as_ref(), kind, "old", known)?;
    if let Some(kind) = kind
        && matches!(
            req.operation,
            wire::Operation::Create | wire::Operation::Update
        )
        && object.is_none()
    {
        return Err(ReviewError::NoObject { kind });
    }
    let meta = object.as_ref().map(|o| &*o.meta);
    let old_meta = old.as_ref().map(|o| &*o.meta);
    let annotation = |m: Option<&wire::Meta<'_>>, k: &str| {
        m.and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(k))
            .map(str::to_owned)
    };
    let namespace = req
        .namespace
        .as_deref()
        .or_else(|| meta.and_then(|m| m.namespace.as_deref()))
        .unwrap_or_default()
        .to_owned();
    let name = if req.name.is_empty() {
        meta.map(|m| owned(&m.name)).unwrap_or_default()
    } else {
        req.name.clone().into_owned()
    };
    let release_annotation = annotation(meta, RELEASE_NAME).map(|rel| {
        let ns = annotation(meta, RELEASE_NAMESPACE).unwrap_or_else(|| namespace.clone());
        ReleaseKey::new(&ns, &rel)
    });
    let writer = writer_facts(req, meta, old_meta)?;
    // Who set each image is read from `fieldsV1` only for a write that claims to be Helm's:
    // the only answer that uses it is the "drift being overwritten" warning.
    let claims_helm = writer
        .field_manager
        .as_ref()
        .is_some_and(|m| settings.actors.helm_managers.contains(m));
    let old_image_owners = match kind {
        Some(k) if claims_helm => {
            image_owners(old_meta, k).map_err(|_| ReviewError::ManagedFields { which: "old" })?
        }
        _ => Vec::new(),
    };
    Ok(Facts {
        operation: operation(req.operation),
        kind,
        namespace,
        name,
        writer,
        release_annotation,
        allow_drift: annotation(meta, ALLOW_DRIFT),
        drift_mark: annotation(meta, DRIFT_MARK),
        has_annotations: meta.is_some_and(|m| m.annotations.is_some()),
        owners: controllers(meta),
        pod_template_hash: meta
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get("pod-template-hash"))
            .map(str::to_owned),
        old_image_owners,
        old_allow_drift: annotation(old_meta, ALLOW_DRIFT),
        old_drift_mark: annotation(old_meta, DRIFT_MARK),
        object_uid: old_meta
            .and_then(|m| m.uid.as_deref())
            .or_else(|| meta.and_then(|m| m.uid.as_deref()))
            .map(str::to_owned),
        record: record_of(req, settings),
        containers: object.map(|o| o.containers).unwrap_or_default(),
        old_containers: if kind.is_some() {
            old.map(|o| o.containers)
        } else {
            None
        },
    })
}

fn operation(op: wire::Operation) -> Operation {
    match op {
        wire::Operation::Create => Operation::Create,
        wire::Operation::Update => Operation::Update,
        wire::Operation::Delete => Operation::Delete,
        wire::Operation::Connect => Operation::Connect,
    }
}

/// What the request says about its writer. The `managedFields` entries are read only when
/// the request names no field manager: they are how [`crate::actor::classify`] finds the
/// writer then, and it reads them for nothing else.
fn writer_facts(
    req: &Request<'_>,
    meta: Option<&wire::Meta<'_>>,
    old_meta: Option<&wire::Meta<'_>>,
) -> Result<WriterFacts, ReviewError> {
    let field_manager = req
        .options
        .as_ref()
        .and_then(|o| o.field_manager.as_deref())
        .map(str::to_owned);
    let (new_managed, old_managed) = if field_manager.as_deref().is_some_and(|m| !m.is_empty()) {
        (Vec::new(), Vec::new())
    } else {
        (managed(meta, "new")?, managed(old_meta, "old")?)
    };
    Ok(WriterFacts {
        user: req
            .user_info
            .username
            .as_deref()
            .unwrap_or_default()
            .to_owned(),
        groups: req
            .user_info
            .groups
            .iter()
            .flatten()
            .map(|g| g.as_ref().to_owned())
            .collect(),
        field_manager,
        new_managed,
        old_managed,
    })
}

/// The controller owner references of an object (all owners when none is the controller).
pub(crate) fn controllers(meta: Option<&wire::Meta<'_>>) -> Vec<Owner> {
    let Some(refs) = meta.and_then(|m| m.owner_references.as_ref()) else {
        return Vec::new();
    };
    let has_controller = refs.iter().any(|r| r.controller == Some(true));
    refs.iter()
        .filter(|r| !has_controller || r.controller == Some(true))
        .map(|r| Owner {
            kind: r.kind.clone(),
            name: r.name.clone(),
        })
        .collect()
}
