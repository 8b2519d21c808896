//! The parts of an AdmissionReview the guard reads, as the API server sends them, and the
//! response it writes back.
//!
//! Two readings of the same body, and every body gets exactly one parse that succeeds:
//!
//! - **Typed, one pass** ([`TypedReview`]): every field straight into its type, the objects
//!   into small structs (metadata, and the container images) with everything else skipped by
//!   the parser. This is the path of every well-formed request. It gives up at the first
//!   surprise — a field of the wrong shape, a duplicate key, an escaped `apiVersion` — and it
//!   is not used for Secrets and ConfigMaps, whose release records are read whole.
//! - **Careful** ([`RawReview`]): every field of `request` first taken as a borrowed
//!   [`RawValue`] (validated, not copied), then the small ones typed one by one. A field of
//!   the wrong shape is then an error about that field, with the uid still known, so the API
//!   server can match the 400-coded answer; objects stay raw until the kind says how to read
//!   them. It reads the objects a second time, which for a 20 KiB review doubled the cost of
//!   the request path: hence the typed pass first.
//!
//! Both read into the same types, so where the typed pass succeeds, the careful one would
//! have read the same request (tested on every row of the bad-input catalogue and the
//! fixtures). kube's `AdmissionRequest<DynamicObject>` instead builds every object as a
//! `serde_json::Value`: for a 20 KiB review that was 85% of the request path.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A pod spec as a request carries it: container names and images borrowed from the body.
pub type RequestSpec<'a> = crate::workload::Spec<Text<'a>>;

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

/// The whole review read in one pass, each field typed. `apiVersion` and `kind` are borrowed:
/// an escaped one sends the body to the careful path, which compares them raw.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TypedReview<'a> {
    #[serde(default, borrow)]
    pub api_version: Option<&'a str>,
    #[serde(default, borrow)]
    pub kind: Option<&'a str>,
    #[serde(default, borrow)]
    pub request: Option<TypedRequest<'a>>,
}

/// `request` read in one pass; `null` reads as absent, as it does for [`RawRequest`]. Its
/// strings are borrowed from the body where they have no escapes: what is kept of them is
/// copied once, into the facts and the log's identity of the request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TypedRequest<'a> {
    #[serde(default, borrow)]
    pub uid: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub kind: Option<Gvk<'a>>,
    #[serde(default, borrow)]
    pub sub_resource: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub namespace: Option<Text<'a>>,
    #[serde(default)]
    pub operation: Option<Operation>,
    #[serde(default, borrow)]
    pub user_info: Option<UserInfo<'a>>,
    /// Boxed as they are read: an object is a few hundred bytes, moved up through every
    /// level of the parse otherwise.
    #[serde(default, borrow)]
    pub object: Option<Box<Object<'a, RequestSpec<'a>>>>,
    #[serde(default, borrow)]
    pub old_object: Option<Box<Object<'a, RequestSpec<'a>>>>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default, borrow)]
    pub options: Option<Options<'a>>,
}

/// An object of the request: still raw (the careful path), or already read (the typed pass).
#[derive(Debug)]
pub enum Slot<'a> {
    Raw(&'a RawValue),
    Read(Box<Object<'a, RequestSpec<'a>>>),
}

/// `request` of an `admission.k8s.io/v1` AdmissionReview, typed.
#[derive(Debug)]
pub struct Request<'a> {
    pub uid: Cow<'a, str>,
    pub kind: Gvk<'a>,
    pub sub_resource: Option<Cow<'a, str>>,
    pub name: Cow<'a, str>,
    pub namespace: Option<Cow<'a, str>>,
    pub operation: Operation,
    pub user_info: UserInfo<'a>,
    pub object: Option<Slot<'a>>,
    pub old_object: Option<Slot<'a>>,
    pub dry_run: Option<bool>,
    pub options: Option<Options<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Gvk<'a> {
    #[serde(default, borrow)]
    pub group: Cow<'a, str>,
    #[serde(default, borrow)]
    pub version: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
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
pub struct UserInfo<'a> {
    #[serde(default, borrow)]
    pub username: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub groups: Option<Vec<Text<'a>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Options<'a> {
    #[serde(default, borrow)]
    pub field_manager: Option<Text<'a>>,
}

/// An object: its kind, its metadata and, for workloads, its spec (`S` = `workload::Spec`),
/// or nothing else (`S` = `IgnoredAny`).
#[derive(Debug, Deserialize)]
pub struct Object<'a, S = IgnoredAny> {
    #[serde(default, borrow)]
    pub kind: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub metadata: Meta<'a>,
    #[serde(default)]
    pub spec: Option<S>,
}

/// Strings are borrowed from the body where they have no escapes (most do not): the facts
/// copy what they keep once, instead of the parser allocating every string first.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta<'a> {
    #[serde(default, borrow)]
    pub name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub namespace: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub uid: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub labels: Option<Labels<'a>>,
    #[serde(default, borrow)]
    pub annotations: Option<Annotations<'a>>,
    #[serde(default)]
    pub owner_references: Option<Vec<OwnerReference>>,
    /// Kept raw (checked to be JSON, not copied) and read by [`Meta::managed_fields`] only
    /// when a decision needs it: the writer's own entry when the request names no field
    /// manager, image ownership for a write that claims to be Helm's. Most requests need
    /// neither, and reading every entry was a seventh of the request's parse.
    #[serde(default, borrow)]
    pub managed_fields: Option<&'a RawValue>,
}

impl<'a> Meta<'a> {
    /// `managedFields`, read now: empty when absent, an error when it is not a list of
    /// entries of the right shape.
    pub fn managed_fields(&self) -> Result<Vec<ManagedField<'a>>, serde_json::Error> {
        match self.managed_fields {
            None => Ok(Vec::new()),
            Some(raw) => serde_json::from_str(raw.get()),
        }
    }
}

/// The annotations the guard reads; every other one (kubectl's last-applied-configuration can
/// be most of a review) is checked to be a string and skipped without being copied.
#[derive(Clone, Debug, Default)]
pub struct Annotations<'a>([Option<Cow<'a, str>>; 4]);

const ANNOTATIONS: [&str; 4] = [
    crate::policy::RELEASE_NAME,
    crate::policy::RELEASE_NAMESPACE,
    crate::policy::ALLOW_DRIFT,
    crate::policy::DRIFT_MARK,
];

impl Annotations<'_> {
    /// The value of one of the annotations the guard reads.
    pub fn get(&self, key: &str) -> Option<&str> {
        let i = ANNOTATIONS.iter().position(|k| *k == key)?;
        self.0.get(i)?.as_deref()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Annotations<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Picker(ANNOTATIONS)).map(Self)
    }
}

/// The labels the guard reads.
#[derive(Clone, Debug, Default)]
pub struct Labels<'a>([Option<Cow<'a, str>>; 1]);

const LABELS: [&str; 1] = ["pod-template-hash"];

impl Labels<'_> {
    /// The value of one of the labels the guard reads.
    pub fn get(&self, key: &str) -> Option<&str> {
        let i = LABELS.iter().position(|k| *k == key)?;
        self.0.get(i)?.as_deref()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Labels<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Picker(LABELS)).map(Self)
    }
}

/// Reads a string map, keeping the values of `N` keys: a map and nothing else (a list is not
/// read as a struct by position), every value a string, no key twice.
struct Picker<const N: usize>([&'static str; N]);

impl<'de, const N: usize> serde::de::Visitor<'de> for Picker<N> {
    type Value = [Option<Cow<'de, str>>; N];

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map of strings")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: [Option<Cow<'de, str>>; N] = std::array::from_fn(|_| None);
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match self.0.iter().position(|k| *k == key) {
                Some(i) => {
                    let Text(value) = map.next_value::<Text<'de>>()?;
                    if out[i].replace(value).is_some() {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                }
                None => {
                    // Taken raw: the parser checks the value and skips it without unescaping
                    // a copy (kubectl's last-applied-configuration is a large escaped string).
                    let raw = map.next_value::<&'de RawValue>()?;
                    if !raw.get().starts_with('"') {
                        return Err(serde::de::Error::custom("a value is not a string"));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A string borrowed from the body unless it has escapes: map keys, container names and
/// images, the request's own strings (copied once, where they are kept, instead of first by
/// the parser). Not `Option<Cow<str>>`: serde borrows a `Cow` only when it is the field's
/// whole type, and copies it inside an `Option`.
#[derive(Clone, Debug)]
pub struct Text<'a>(Cow<'a, str>);

impl<'a> Text<'a> {
    pub fn into_cow(self) -> Cow<'a, str> {
        self.0
    }
}

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                s: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(s))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(s.to_owned()))
            }
        }
        d.deserialize_str(V).map(Text)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct OwnerReference {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedField<'a> {
    #[serde(default, borrow)]
    pub manager: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub operation: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub subresource: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub time: Option<Text<'a>>,
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
