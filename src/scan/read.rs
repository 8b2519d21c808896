//! Reading what `kubectl get -o json|yaml` (or an API list page) prints into release revisions
//! and [`LiveWorkload`] views, in parallel.
//!
//! A JSON document is split into its items without building them (`&RawValue` slices of the
//! text), and each item is then read straight into what is kept: a release record decoded to
//! its [`RevisionIndex`], a workload into its typed view — names, owners, the helm-guard and
//! Helm annotations, container images, image owners from `managedFields`. Whole objects are
//! never held, so memory follows the index and the views, not the files. YAML goes through the
//! project's one document parser ([`crate::store::parse_objects`]).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::admission::facts::{controllers, image_owners};
use crate::admission::wire;
use crate::helm::record::index_record;
use crate::helm::{DecodeError, DecodeLimits, ReleaseKey, RevisionIndex};
use crate::policy::live::LiveWorkload;
use crate::policy::{ALLOW_DRIFT, DRIFT_MARK, RELEASE_NAME, RELEASE_NAMESPACE};
use crate::store::parse_objects;
use crate::workload::{Spec, WorkloadKind};

/// The items of one document, not yet read.
pub(crate) enum Items<'a> {
    /// JSON: borrowed slices, and the kind of a typed list (`DeploymentList` → `Deployment`)
    /// for items that carry none (the API omits it in list items).
    Raw {
        items: Vec<&'a RawValue>,
        kind: Option<String>,
        api_version: Option<String>,
    },
    /// YAML, already parsed.
    Values(Vec<Value>),
}

impl Items<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Raw { items, .. } => items.len(),
            Self::Values(v) => v.len(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Top<'a> {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default, borrow)]
    items: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    metadata: Option<ListMeta>,
}

#[derive(Default, Deserialize)]
struct ListMeta {
    #[serde(default, rename = "continue")]
    cont: Option<String>,
}

/// Splits a document into items. Errors give a position, never a piece of the input.
pub(crate) fn items(text: &str) -> Result<(Items<'_>, Option<String>), String> {
    if !text.trim_start().starts_with('{') {
        return parse_objects(text).map(|v| (Items::Values(v), None));
    }
    let top: Top<'_> = serde_json::from_str(text).map_err(|e| {
        format!(
            "JSON {} error at line {}",
            crate::helm::json_category(&e),
            e.line()
        )
    })?;
    let cont = top.metadata.and_then(|m| m.cont).filter(|c| !c.is_empty());
    let is_list = top.kind.as_deref().is_some_and(|k| k.ends_with("List"));
    match top.items {
        Some(items) if is_list => Ok((
            Items::Raw {
                items,
                kind: top
                    .kind
                    .as_deref()
                    .and_then(|k| k.strip_suffix("List"))
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned),
                api_version: top.api_version,
            },
            cont,
        )),
        _ => {
            let whole: &RawValue = serde_json::from_str(text).map_err(|e| {
                format!(
                    "JSON {} error at line {}",
                    crate::helm::json_category(&e),
                    e.line()
                )
            })?;
            Ok((
                Items::Raw {
                    items: vec![whole],
                    kind: None,
                    api_version: None,
                },
                None,
            ))
        }
    }
}

/// Runs `f` over `items` on every core, keeping the order.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if workers <= 1 || items.len() < 32 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(workers);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// What one item turned out to be.
pub(crate) enum Read {
    Record(Arc<RevisionIndex>),
    Undecodable(DecodeError),
    Workload(LiveWorkload),
    /// An object that is neither (or a workload without a readable spec, counted).
    Other,
    Unreadable,
}

/// Reads every item of a document as release records (anything else is [`Read::Other`]).
pub(crate) fn records(items: &Items<'_>, limits: DecodeLimits) -> Vec<Read> {
    let one = |mut v: Value, kind: Option<&str>| {
        if v.get("kind").is_none()
            && let (Some(k), Some(obj)) = (kind, v.as_object_mut())
        {
            obj.insert("kind".into(), Value::String(k.to_owned()));
        }
        match index_record(&v, limits) {
            Some(Ok(rev)) => Read::Record(rev),
            Some(Err(e)) => Read::Undecodable(e),
            None => Read::Other,
        }
    };
    match items {
        Items::Raw { items, kind, .. } => par_map(items, |raw| {
            match serde_json::from_str::<Value>(raw.get()) {
                Ok(v) => one(v, kind.as_deref()),
                Err(_) => Read::Unreadable,
            }
        }),
        Items::Values(values) => par_map(values, |v| one(v.clone(), None)),
    }
}

/// Reads every item of a document as workloads (anything else is [`Read::Other`]).
pub(crate) fn workloads(items: &Items<'_>) -> Vec<Read> {
    match items {
        Items::Raw {
            items,
            kind,
            api_version,
        } => par_map(items, |raw| {
            workload(raw.get(), kind.as_deref(), api_version.as_deref())
        }),
        Items::Values(values) => par_map(values, |v| match serde_json::to_string(v) {
            Ok(text) => workload(&text, None, None),
            Err(_) => Read::Unreadable,
        }),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object<'a> {
    #[serde(default, borrow)]
    metadata: wire::Meta<'a>,
    #[serde(default)]
    spec: Option<Spec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KindOnly {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// One object as a workload view, if it is one of the workload kinds.
pub(crate) fn workload(
    text: &str,
    list_kind: Option<&str>,
    list_api_version: Option<&str>,
) -> Read {
    // The kind first, cheaply: most objects in a `kubectl get all` dump are not workloads.
    let Ok(head) = serde_json::from_str::<KindOnly>(text) else {
        return Read::Unreadable;
    };
    let kind = head.kind.as_deref().or(list_kind).unwrap_or_default();
    let api_version = head
        .api_version
        .as_deref()
        .or(list_api_version)
        .unwrap_or_default();
    let Some(kind) = WorkloadKind::from_api_version_kind(api_version, kind) else {
        return Read::Other;
    };
    let Ok(obj) = serde_json::from_str::<Object>(text) else {
        return Read::Unreadable;
    };
    let meta = obj.metadata;
    let annotation = |k: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .map(str::to_owned)
    };
    let namespace = meta.namespace.as_deref().unwrap_or("default").to_owned();
    let release_annotation = annotation(RELEASE_NAME).map(|rel| {
        let ns = annotation(RELEASE_NAMESPACE).unwrap_or_else(|| namespace.clone());
        ReleaseKey::new(&ns, &rel)
    });
    // Controller owners only, as admission reads them.
    let owners = controllers(Some(&meta));
    let Ok(image_owners) = image_owners(Some(&meta), kind) else {
        return Read::Unreadable;
    };
    Read::Workload(LiveWorkload {
        kind,
        name: meta.name.as_deref().unwrap_or_default().to_owned(),
        namespace,
        release_annotation,
        allow_drift: annotation(ALLOW_DRIFT),
        drift_mark: annotation(DRIFT_MARK),
        owners,
        pod_template_hash: meta
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            .map(str::to_owned),
        image_owners,
        containers: obj.spec.unwrap_or_default().containers(kind),
    })
}
