//! The parts of an AdmissionReview the guard reads, as the API server sends them.
//!
//! kube's `AdmissionRequest<DynamicObject>` flattens each object into a `serde_json::Value`
//! (buffering it through serde's `Content` first): for a 20 KiB review that was 85% of the
//! request path. Here the objects stay raw JSON until the request's kind is known, and are then
//! read into small typed structs — metadata, and for workloads the container images — with
//! everything else skipped by the parser. Only a release record (a Secret or ConfigMap) is
//! read whole, because its data is what gets decoded.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// `{"request": …}`.
#[derive(Deserialize)]
pub(super) struct Review {
    #[serde(default)]
    pub request: Option<Request>,
}

/// `request` of an `admission.k8s.io/v1` AdmissionReview.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub uid: String,
    pub kind: Gvk,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(default)]
    pub object: Option<Box<RawValue>>,
    #[serde(default)]
    pub old_object: Option<Box<RawValue>>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub options: Option<Options>,
}

#[derive(Debug, Deserialize)]
pub struct Gvk {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    pub kind: String,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

#[derive(Debug, Default, Deserialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    #[serde(default)]
    pub field_manager: Option<String>,
}

/// An object: its metadata and, for workloads, its spec (`S` = `workload::Spec`), or nothing
/// else (`S` = `IgnoredAny`).
#[derive(Debug, Deserialize)]
pub struct Object<S = IgnoredAny> {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: Option<S>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub owner_references: Option<Vec<OwnerReference>>,
    #[serde(default)]
    pub managed_fields: Option<Vec<ManagedField>>,
}

#[derive(Debug, Deserialize)]
pub struct OwnerReference {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedField {
    #[serde(default)]
    pub manager: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub subresource: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
    /// Read only when ownership of a container's image matters (a Helm write).
    #[serde(default, rename = "fieldsV1")]
    pub fields_v1: Option<Box<RawValue>>,
}
