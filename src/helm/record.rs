//! Release records as objects: which Secrets and ConfigMaps hold a Helm release, what their
//! names say (`sh.helm.release.v1.<release>.v<revision>`), and decoding one given as JSON
//! (`kubectl get -o json`, a file, an admission request) into its index. The watch decodes
//! typed objects through [`super::decode`] directly; both end in the same checks.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::{
    DecodeError, DecodeLimits, RecordKind, RecordSource, ReleaseKey, RevisionIndex, decode,
    describe,
};

/// Prefix of every release record's object name.
pub const RECORD_PREFIX: &str = "sh.helm.release.v1.";

/// The Kubernetes kind of a storage driver's records.
pub fn kind_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Secret => "Secret",
        RecordKind::ConfigMap => "ConfigMap",
    }
}

/// The release and revision a record's object name stands for.
pub fn parse_record_name(namespace: &str, name: &str) -> Option<(ReleaseKey, u32)> {
    let rest = name.strip_prefix(RECORD_PREFIX)?;
    let (release, revision) = rest.rsplit_once(".v")?;
    if release.is_empty() {
        return None;
    }
    Some((ReleaseKey::new(namespace, release), revision.parse().ok()?))
}

/// If `obj` is a Helm release record (Secret of type `helm.sh/release.v1`, or ConfigMap
/// labelled `owner=helm` with a `release` key), its identity and Helm string.
pub fn release_record(obj: &Value) -> Option<(RecordKind, &str, &str, &Value)> {
    let kind = match obj.get("kind")?.as_str()? {
        "Secret" if obj.get("type")?.as_str()? == "helm.sh/release.v1" => RecordKind::Secret,
        "ConfigMap"
            if obj
                .pointer("/metadata/labels/owner")
                .and_then(Value::as_str)
                == Some("helm") =>
        {
            RecordKind::ConfigMap
        }
        _ => return None,
    };
    let name = obj.pointer("/metadata/name")?.as_str()?;
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let data = obj.pointer("/data/release")?;
    Some((kind, namespace, name, data))
}

/// Decodes a release record object (as `kubectl get -o json` prints it) into its index.
pub fn index_record(
    obj: &Value,
    limits: DecodeLimits,
) -> Option<Result<Arc<RevisionIndex>, DecodeError>> {
    let (kind, namespace, name, data) = release_record(obj)?;
    let Some(text) = data.as_str() else {
        return Some(Err(DecodeError::Inconsistent {
            object: describe(kind, namespace, name),
            why: "data.release is not a string".into(),
        }));
    };
    // A Secret's data carries the API's own base64 layer on top of Helm's.
    let unwrapped;
    let helm_string: &[u8] = match kind {
        RecordKind::Secret => match STANDARD.decode(text.trim()) {
            Ok(b) => {
                unwrapped = b;
                &unwrapped
            }
            Err(_) => {
                return Some(Err(DecodeError::Base64 {
                    object: describe(kind, namespace, name),
                }));
            }
        },
        RecordKind::ConfigMap => text.as_bytes(),
    };
    let src = RecordSource {
        kind,
        namespace,
        name,
        release: helm_string,
    };
    Some(decode(src, limits).map(|d| {
        let rev = RevisionIndex::from_decoded(&d);
        if rev.unparsable_documents > 0 {
            tracing::warn!(
                release = %rev.release,
                revision = rev.revision,
                documents = rev.unparsable_documents,
                "manifest documents did not parse; their workloads are not guarded"
            );
        }
        rev
    }))
}
