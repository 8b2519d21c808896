//! The parts of an AdmissionReview the guard reads, as the API server sends them, and the
//! response it writes back.
//!
//! One pass of the parser over the body: every field of `request` is first taken as a borrowed
//! [`RawValue`] (serde_json validates it and moves on, no allocation), then the small ones are
//! read into their types. A field of the wrong shape is then an error about that field, with
//! the uid still known, so the API server can match the 400-coded answer — without a second
//! parse of the body. The objects stay raw until the request's kind says how to read them, and
//! are then read into small typed structs (metadata, and for workloads the container images)
//! with everything else skipped by the parser. kube's `AdmissionRequest<DynamicObject>` instead
//! builds every object as a `serde_json::Value`: for a 20 KiB review that was 85% of the
//! request path.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `{"apiVersion": …, "kind": …, "request": …}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawReview<'a> {
    #[serde(default, borrow)]
    pub api_version: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub kind: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub request: Option<RawRequest<'a>>,
}

/// `request`, each field still raw.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawRequest<'a> {
    #[serde(default, borrow)]
    pub uid: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub kind: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub sub_resource: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub namespace: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub operation: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub user_info: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub old_object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub dry_run: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub options: Option<&'a RawValue>,
}

/// `request` of an `admission.k8s.io/v1` AdmissionReview, typed.
#[derive(Debug)]
pub struct Request<'a> {
    pub uid: String,
    pub kind: Gvk,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: UserInfo,
    pub object: Option<&'a RawValue>,
    pub old_object: Option<&'a RawValue>,
    pub dry_run: Option<bool>,
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

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
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

/// An object: its kind, its metadata and, for workloads, its spec (`S` = `workload::Spec`),
/// or nothing else (`S` = `IgnoredAny`).
#[derive(Debug, Deserialize)]
pub struct Object<'a, S = IgnoredAny> {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default, borrow)]
    pub metadata: Meta<'a>,
    #[serde(default)]
    pub spec: Option<S>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta<'a> {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub labels: Option<Labels>,
    #[serde(default)]
    pub annotations: Option<Annotations>,
    #[serde(default)]
    pub owner_references: Option<Vec<OwnerReference>>,
    #[serde(default)]
    #[serde(borrow)]
    pub managed_fields: Option<Vec<ManagedField<'a>>>,
}

/// The annotations the guard reads; every other one (kubectl's last-applied-configuration can
/// be most of a review) is skipped by the parser without being copied.
#[derive(Debug, Default, Deserialize)]
pub struct Annotations {
    #[serde(default, rename = "meta.helm.sh/release-name")]
    release_name: Option<String>,
    #[serde(default, rename = "meta.helm.sh/release-namespace")]
    release_namespace: Option<String>,
    #[serde(default, rename = "helm-guard.io/allow-drift")]
    allow_drift: Option<String>,
    #[serde(default, rename = "helm-guard.io/drift")]
    drift: Option<String>,
}

impl Annotations {
    /// The value of one of the annotations the guard reads.
    pub fn get(&self, key: &str) -> Option<&String> {
        match key {
            crate::policy::RELEASE_NAME => self.release_name.as_ref(),
            crate::policy::RELEASE_NAMESPACE => self.release_namespace.as_ref(),
            crate::policy::ALLOW_DRIFT => self.allow_drift.as_ref(),
            crate::policy::DRIFT_MARK => self.drift.as_ref(),
            _ => None,
        }
    }
}

/// The labels the guard reads.
#[derive(Debug, Default, Deserialize)]
pub struct Labels {
    #[serde(default, rename = "pod-template-hash")]
    pod_template_hash: Option<String>,
}

impl Labels {
    /// The value of one of the labels the guard reads.
    pub fn get(&self, key: &str) -> Option<&String> {
        match key {
            "pod-template-hash" => self.pod_template_hash.as_ref(),
            _ => None,
        }
    }
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
pub struct ManagedField<'a> {
    #[serde(default)]
    pub manager: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub subresource: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
    /// Read only when ownership of a container's image matters (a Helm write); borrowed,
    /// never copied, until then.
    #[serde(default, borrow, rename = "fieldsV1")]
    pub fields_v1: Option<&'a RawValue>,
}

/// The AdmissionReview sent back.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResponseReview<'a> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: Response<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Response<'a> {
    pub uid: &'a str,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub warnings: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// base64 of the JSON Patch, as `admission.k8s.io/v1` documents it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
}

#[derive(Serialize)]
pub(super) struct Status<'a> {
    pub code: u16,
    pub reason: &'static str,
    pub message: &'a str,
}
