//! Release record → decoded release: base64, bounded gunzip, JSON, consistency checks.

use std::io::Read;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::read::GzDecoder;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{ChartRef, ReleaseKey, Status};

/// Helm's gzip check (`pkg/storage/driver/util.go`): records without it are uncompressed JSON.
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

/// Bounds on what one release record may cost.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Largest decompressed release JSON accepted.
    pub max_decompressed: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_decompressed: 32 << 20,
        }
    }
}

/// Which Helm storage driver wrote the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Secret,
    ConfigMap,
}

/// A release record as found in the cluster: the holding object's identity and the Helm
/// string in `data.release` (for a Secret, after the API's own base64 layer is removed).
#[derive(Clone, Copy, Debug)]
pub struct RecordSource<'a> {
    pub kind: RecordKind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub release: &'a [u8],
}

impl RecordSource<'_> {
    fn object(&self) -> String {
        describe(self.kind, self.namespace, self.name)
    }
}

/// Longest name (or namespace) an error message repeats: a Kubernetes object name is at most
/// 253 bytes, but a record read from a file or crafted by hand can hold anything (found by the
/// `record` fuzz target: a 1 KiB name made a 1 KiB message).
const MAX_NAME_IN_MESSAGE: usize = 253;

/// At most [`MAX_NAME_IN_MESSAGE`] bytes of `s`, cut on a character boundary.
fn clip_name(s: &str) -> &str {
    let mut end = s.len().min(MAX_NAME_IN_MESSAGE);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `Secret ns/name` for messages, with bounded name and namespace.
pub(crate) fn describe(kind: RecordKind, namespace: &str, name: &str) -> String {
    let kind = match kind {
        RecordKind::Secret => "Secret",
        RecordKind::ConfigMap => "ConfigMap",
    };
    format!("{kind} {}/{}", clip_name(namespace), clip_name(name))
}

/// Why a record could not be decoded. Messages name the object and the failure, never any of
/// the record's content: parser errors are reduced to their category and position.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// `data.release` is not base64.
    #[error("{object}: data.release is not valid base64")]
    Base64 { object: String },
    /// The gzip stream is corrupt or truncated.
    #[error("{object}: data.release is not a valid gzip stream")]
    Gzip { object: String },
    /// Decompression would exceed [`DecodeLimits::max_decompressed`].
    #[error("{object}: release exceeds {limit} bytes decompressed")]
    TooLarge { object: String, limit: usize },
    /// The JSON is malformed or of the wrong shape.
    #[error("{object}: release JSON is invalid ({category} error at line {line}, column {column})")]
    Json {
        object: String,
        category: &'static str,
        line: usize,
        column: usize,
    },
    /// The record disagrees with the object that holds it.
    #[error("{object}: not a consistent Helm release record: {why}")]
    Inconsistent { object: String, why: String },
}

impl DecodeError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Base64 { .. } => "base64",
            Self::Gzip { .. } => "gzip",
            Self::TooLarge { .. } => "too_large",
            Self::Json { .. } => "json",
            Self::Inconsistent { .. } => "inconsistent",
        }
    }
}

/// A decoded revision: what indexing and value analysis need, and nothing else. Short-lived:
/// it holds values (secrets) and is dropped once reduced.
#[derive(Debug)]
pub struct DecodedRelease {
    pub key: ReleaseKey,
    pub revision: u32,
    pub status: Status,
    pub chart: ChartRef,
    pub manifest: String,
    /// User-supplied values (`release.config`). Secret material: never print.
    pub config: Value,
    /// The chart's defaults as stored (`release.chart.values`). Secret material: never print.
    pub chart_values: Value,
}

#[derive(Deserialize)]
struct RawRelease<'a> {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    version: i64,
    #[serde(default)]
    info: Option<RawInfo>,
    /// Kept as the raw JSON string (borrowed from the decompressed record) until the status
    /// is known: a superseded revision's manifest is never unescaped nor copied.
    #[serde(default, borrow)]
    manifest: Option<&'a RawValue>,
    #[serde(default)]
    chart: Option<RawChart>,
    #[serde(default)]
    config: Option<Value>,
}

#[derive(Deserialize)]
struct RawInfo {
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct RawChart {
    #[serde(default)]
    metadata: Option<RawMetadata>,
    #[serde(default)]
    values: Option<Value>,
}

#[derive(Deserialize)]
struct RawMetadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
}

/// Decodes one release record. The record must describe a release in the object's own
/// namespace, under the object's own name (`sh.helm.release.v1.<name>.v<revision>`): a record
/// in namespace A cannot speak for a release in namespace B.
pub fn decode(src: RecordSource<'_>, limits: DecodeLimits) -> Result<DecodedRelease, DecodeError> {
    let object = || src.object();
    let compressed = STANDARD
        .decode(trim_ascii(src.release))
        .map_err(|_| DecodeError::Base64 { object: object() })?;
    let json = if compressed.starts_with(&GZIP_MAGIC) {
        gunzip(&compressed, limits.max_decompressed).map_err(|e| match e {
            Gunzip::TooLarge => DecodeError::TooLarge {
                object: object(),
                limit: limits.max_decompressed,
            },
            Gunzip::Corrupt => DecodeError::Gzip { object: object() },
        })?
    } else if compressed.len() > limits.max_decompressed {
        return Err(DecodeError::TooLarge {
            object: object(),
            limit: limits.max_decompressed,
        });
    } else {
        compressed
    };
    let json_error = |e: serde_json::Error| DecodeError::Json {
        object: object(),
        category: json_category(&e),
        line: e.line(),
        column: e.column(),
    };
    let raw: RawRelease<'_> = serde_json::from_slice(&json).map_err(json_error)?;

    let inconsistent = |why: String| DecodeError::Inconsistent {
        object: object(),
        why,
    };
    if raw.name.is_empty() {
        return Err(inconsistent("no release name".into()));
    }
    let revision = u32::try_from(raw.version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| inconsistent("revision is not a positive integer".into()))?;
    if !raw.namespace.is_empty() && raw.namespace != src.namespace {
        return Err(inconsistent(
            "release namespace differs from the object's namespace".into(),
        ));
    }
    let expected = format!("sh.helm.release.v1.{}.v{}", raw.name, revision);
    if src.name != expected {
        return Err(inconsistent(format!(
            "object name should be {}",
            clip_name(&expected)
        )));
    }
    let (chart, chart_values) = match raw.chart {
        Some(c) => {
            let meta = c.metadata.unwrap_or(RawMetadata {
                name: None,
                version: None,
            });
            (
                ChartRef {
                    name: meta.name.unwrap_or_default().into(),
                    version: meta.version.unwrap_or_default().into(),
                },
                c.values.unwrap_or(Value::Null),
            )
        }
        None => (ChartRef::default(), Value::Null),
    };
    let status = raw
        .info
        .and_then(|i| i.status)
        .map_or(Status::Unknown, |s| Status::parse(&s));
    // Only a revision a decision may be judged against needs its manifest (see
    // `RevisionIndex::from_decoded`): a superseded one's is skipped, as long as it is a string.
    let manifest = match raw.manifest {
        None => String::new(),
        Some(m) if m.get() == "null" => String::new(),
        Some(m) if status == Status::Superseded && m.get().starts_with('"') => String::new(),
        Some(m) => serde_json::from_str(m.get()).map_err(json_error)?,
    };
    Ok(DecodedRelease {
        key: ReleaseKey::new(src.namespace, &raw.name),
        revision,
        status,
        chart,
        manifest,
        config: raw.config.unwrap_or(Value::Null),
        chart_values,
    })
}

/// A JSON error's category, for messages that must not quote the input (serde_json's own
/// messages may contain the offending value).
pub(crate) fn json_category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "io",
        serde_json::error::Category::Syntax => "syntax",
        serde_json::error::Category::Data => "shape",
        serde_json::error::Category::Eof => "truncated",
    }
}

enum Gunzip {
    TooLarge,
    Corrupt,
}

/// Decompresses at most `limit` bytes; one byte more means the record is too large. The
/// reader is bounded, so a gzip bomb costs `limit` bytes of memory and no more.
fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, Gunzip> {
    let mut out = Vec::with_capacity((data.len() * 4).min(limit));
    GzDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| Gunzip::Corrupt)?;
    if out.len() > limit {
        return Err(Gunzip::TooLarge);
    }
    Ok(out)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::build::{encode_release, gzip_best};

    fn src<'a>(name: &'a str, data: &'a [u8]) -> RecordSource<'a> {
        RecordSource {
            kind: RecordKind::Secret,
            namespace: "db",
            name,
            release: data,
        }
    }

    fn release_json(extra: &str) -> String {
        format!(
            r#"{{"name":"pg","namespace":"db","version":3,"info":{{"status":"deployed"}},"manifest":"","config":{{"auth":{{"password":"CANARY-pw"}}}}{extra}}}"#
        )
    }

    #[test]
    fn decodes_gzip_and_plain() {
        let json = release_json("");
        let gz = encode_release(json.as_bytes());
        let plain = STANDARD.encode(json.as_bytes());
        for data in [gz.as_bytes(), plain.as_bytes()] {
            let r = decode(
                src("sh.helm.release.v1.pg.v3", data),
                DecodeLimits::default(),
            )
            .expect("decodes");
            assert_eq!(r.revision, 3);
            assert_eq!(r.status, Status::Deployed);
            assert_eq!(&*r.key.name, "pg");
            // Absent chart, hooks, apply_method: tolerated.
            assert_eq!(r.chart_values, Value::Null);
        }
    }

    /// Fuzz finding (`record` target): names are repeated in messages, and a record from a
    /// file or a crafted object may carry names of any length; messages stay bounded.
    #[test]
    fn long_names_do_not_make_long_messages() {
        let long = "n".repeat(100_000);
        let record = format!(r#"{{"name":"{long}","version":3}}"#);
        let data = encode_release(record.as_bytes());
        for name in [long.as_str(), "sh.helm.release.v1.pg.v3"] {
            let err =
                decode(src(name, data.as_bytes()), DecodeLimits::default()).expect_err("bad name");
            let msg = err.to_string();
            assert!(msg.len() < 1024, "{} bytes: {}", msg.len(), &msg[..200]);
            assert_eq!(err.label(), "inconsistent");
        }
        let err = decode(src(&long, b"!"), DecodeLimits::default()).expect_err("not base64");
        assert!(err.to_string().len() < 1024);
    }

    #[test]
    fn failures_are_typed_and_never_show_content() {
        let big = format!(
            r#"{{"name":"pg","version":3,"manifest":"{}"}}"#,
            "a".repeat(4096)
        );
        let bomb = STANDARD.encode(gzip_best(big.as_bytes()));
        let mut truncated = gzip_best(release_json("").as_bytes());
        truncated.truncate(truncated.len() / 2);
        let truncated = STANDARD.encode(truncated);
        let bad_json = STANDARD.encode(r#"{"name":"pg","version":"CANARY-pw"}"#);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "sh.helm.release.v1.pg.v3",
                b"not base64 CANARY-pw".to_vec(),
                "base64",
            ),
            ("sh.helm.release.v1.pg.v3", bomb.into_bytes(), "too_large"),
            ("sh.helm.release.v1.pg.v3", truncated.into_bytes(), "gzip"),
            ("sh.helm.release.v1.pg.v3", bad_json.into_bytes(), "json"),
            (
                "sh.helm.release.v1.other.v3",
                encode_release(release_json("").as_bytes()).into_bytes(),
                "inconsistent",
            ),
        ];
        for (name, data, label) in cases {
            let err = decode(
                src(name, &data),
                DecodeLimits {
                    max_decompressed: 1024,
                },
            )
            .expect_err(label);
            assert_eq!(err.label(), label, "{err}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("Secret db/{name}")), "{msg}");
            assert!(!msg.contains("CANARY"), "{msg}");
        }
    }

    #[test]
    fn helm4_fields_and_hooks() {
        // Helm 4 adds apply_method; hooks carry full manifests that are not part of the release's
        // rendered objects; config and chart.values may be absent.
        let hook_job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  annotations:\n    helm.sh/hook: pre-upgrade\nspec:\n  template:\n    spec:\n      containers:\n        - name: m\n          image: migrate:1\n";
        let json = serde_json::json!({
            "name": "pg", "namespace": "db", "version": 3, "apply_method": "ssa",
            "info": {"status": "pending-upgrade"},
            "chart": {"metadata": {"name": "postgresql", "version": "14.0.0"}},
            "manifest": "---\n# Source: pg/templates/d.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: nginx:1\n",
            "hooks": [{"name": "migrate", "kind": "Job", "path": "pg/templates/hook.yaml", "manifest": hook_job, "events": ["pre-upgrade"]}],
        });
        let data = encode_release(json.to_string().as_bytes());
        let r = decode(
            src("sh.helm.release.v1.pg.v3", data.as_bytes()),
            DecodeLimits::default(),
        )
        .expect("decodes");
        assert_eq!(r.status, Status::PendingUpgrade);
        assert_eq!(&*r.chart.version, "14.0.0");
        assert_eq!(r.config, Value::Null);
        let idx = crate::helm::RevisionIndex::from_decoded(&r);
        let names: Vec<String> = idx.workloads.iter().map(|w| w.key.to_string()).collect();
        assert_eq!(names, ["Deployment db/web"], "hooks are not indexed");
    }

    #[test]
    fn a_superseded_manifest_is_not_copied_but_still_checked() {
        let manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n";
        let record = |status: &str, manifest: Value| {
            let json = serde_json::json!({"name": "pg", "namespace": "db", "version": 3,
                "info": {"status": status}, "manifest": manifest});
            encode_release(json.to_string().as_bytes())
        };
        let decoded = |data: String| {
            decode(
                src("sh.helm.release.v1.pg.v3", data.as_bytes()),
                DecodeLimits::default(),
            )
        };
        let old = decoded(record("superseded", manifest.into())).expect("decodes");
        assert_eq!(old.status, Status::Superseded);
        assert!(old.manifest.is_empty(), "no decision reads it");
        let live = decoded(record("deployed", manifest.into())).expect("decodes");
        assert_eq!(live.manifest, manifest);
        for status in ["superseded", "deployed"] {
            let err = decoded(record(status, serde_json::json!(["not", "a string"])))
                .expect_err("a manifest that is not a string");
            assert_eq!(err.label(), "json", "{status}");
        }
    }

    #[test]
    fn a_record_cannot_speak_for_another_namespace() {
        let json = release_json("").replace(r#""namespace":"db""#, r#""namespace":"prod""#);
        let data = encode_release(json.as_bytes());
        let err = decode(
            src("sh.helm.release.v1.pg.v3", data.as_bytes()),
            DecodeLimits::default(),
        )
        .expect_err("namespace mismatch");
        assert_eq!(err.label(), "inconsistent");
    }
}
