//! The objects the release watch lists: a Secret or ConfigMap reduced, while it is parsed, to
//! what a release record needs — metadata, `type`, and `data.release` as the API sent it.
//!
//! Why not `DeserializeGuard<Secret>`: kube's guard parses every object into a generic value
//! tree, clones that tree, then builds the typed object from the clone, base64-decoding every
//! data key on the way — three copies of each record, made on the async worker that drives
//! the list, serially. A cold start lists every revision of every release (gigabytes at ten
//! thousand releases), so that worker was the bottleneck. Here each object is parsed once,
//! keys other than `release` are skipped unparsed, and the API's base64 layer of a Secret is
//! only removed on a decode thread, for the records that are read at all.
//!
//! Like the guard, an object of the wrong shape (a `data` that is not a map, a non-string
//! `release`) does not fail its list page: it is kept and reported as invalid, by name.

use std::borrow::Cow;
use std::marker::PhantomData;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::helm::RecordKind;

/// Which storage driver's objects a [`RecordObject`] is.
pub trait Driver: Clone + std::fmt::Debug + Default + Send + Sync + 'static {
    const KIND: RecordKind;
    /// The Kubernetes kind (`Secret`).
    const KIND_NAME: &'static str;
    /// The resource's plural (`secrets`).
    const PLURAL: &'static str;
}

/// Helm's Secret driver.
#[derive(Clone, Debug, Default)]
pub struct Secrets;

/// Helm's ConfigMap driver.
#[derive(Clone, Debug, Default)]
pub struct ConfigMaps;

impl Driver for Secrets {
    const KIND: RecordKind = RecordKind::Secret;
    const KIND_NAME: &'static str = "Secret";
    const PLURAL: &'static str = "secrets";
}

impl Driver for ConfigMaps {
    const KIND: RecordKind = RecordKind::ConfigMap;
    const KIND_NAME: &'static str = "ConfigMap";
    const PLURAL: &'static str = "configmaps";
}

/// A Secret or ConfigMap as the release watch keeps it between the list and the decoder.
#[derive(Clone, Debug, Default)]
pub struct RecordObject<D: Driver> {
    pub metadata: ObjectMeta,
    /// The Secret's `type`, when it is a string.
    pub type_: Option<String>,
    /// `data.release` as sent: for a Secret still in the API's base64.
    pub release: Option<String>,
    /// `data` or `data.release` had the wrong shape.
    pub invalid: bool,
    driver: PhantomData<D>,
}

/// The wire shape: unknown keys are skipped by serde without being built.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default, rename = "type")]
    type_: Option<Value>,
    #[serde(default)]
    data: Option<Data>,
}

/// `data`: only `release` is kept; any other key is skipped, any other shape noted.
enum Data {
    Map(Option<Value>),
    NotAMap,
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<De: Deserializer<'de>>(de: De) -> Result<Self, De::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Data;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Data, A::Error> {
                let mut release = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "release" {
                        release = Some(map.next_value::<Value>()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Data::Map(release))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Data, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Data::NotAMap)
            }
            fn visit_unit<E>(self) -> Result<Data, E> {
                Ok(Data::Map(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Data, E> {
                Ok(Data::NotAMap)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Data, E> {
                Ok(Data::NotAMap)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Data, E> {
                Ok(Data::NotAMap)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Data, E> {
                Ok(Data::NotAMap)
            }
            fn visit_str<E>(self, _: &str) -> Result<Data, E> {
                Ok(Data::NotAMap)
            }
        }
        de.deserialize_any(V)
    }
}

impl<'de, D: Driver> Deserialize<'de> for RecordObject<D> {
    fn deserialize<De: Deserializer<'de>>(de: De) -> Result<Self, De::Error> {
        let wire = Wire::deserialize(de)?;
        let (release, invalid) = match wire.data {
            None | Some(Data::Map(None)) => (None, false),
            Some(Data::Map(Some(Value::String(s)))) => (Some(s), false),
            Some(Data::Map(Some(Value::Null))) => (None, false),
            Some(Data::Map(Some(_)) | Data::NotAMap) => (None, true),
        };
        Ok(Self {
            metadata: wire.metadata,
            type_: match wire.type_ {
                Some(Value::String(s)) => Some(s),
                _ => None,
            },
            release,
            invalid,
            driver: PhantomData,
        })
    }
}

impl<D: Driver> Resource for RecordObject<D> {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(D::KIND_NAME)
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(D::PLURAL)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The watched Secrets.
pub type SecretRecord = RecordObject<Secrets>;
/// The watched ConfigMaps.
pub type ConfigMapRecord = RecordObject<ConfigMaps>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_a_record_needs_and_never_fails_on_shape() {
        let cases: [(&str, Option<&str>, bool); 6] = [
            (
                r#"{"data":{"release":"SGk=","other":{"deep":[1,2]}}}"#,
                Some("SGk="),
                false,
            ),
            (r#"{"data":{"other":"x"}}"#, None, false),
            (r#"{"data":null}"#, None, false),
            (r#"{"data":["release"]}"#, None, true),
            (r#"{"data":{"release":{"not":"a string"}}}"#, None, true),
            (r#"{"data":"release"}"#, None, true),
        ];
        for (json, release, invalid) in cases {
            let obj: SecretRecord = serde_json::from_str(&format!(
                r#"{{"apiVersion":"v1","kind":"Secret","type":"helm.sh/release.v1","metadata":{{"name":"n","namespace":"ns","labels":{{"owner":"helm"}}}},{}}}"#,
                &json[1..json.len() - 1]
            ))
            .expect(json);
            assert_eq!(obj.release.as_deref(), release, "{json}");
            assert_eq!(obj.invalid, invalid, "{json}");
            assert_eq!(obj.type_.as_deref(), Some("helm.sh/release.v1"));
            assert_eq!(obj.metadata.name.as_deref(), Some("n"));
        }
        let odd: ConfigMapRecord =
            serde_json::from_str(r#"{"type":7,"metadata":{"name":"m"}}"#).expect("odd type");
        assert_eq!((odd.type_, odd.release, odd.invalid), (None, None, false));
        assert_eq!(
            SecretRecord::url_path(&(), Some("db")),
            "/api/v1/namespaces/db/secrets"
        );
    }
}
