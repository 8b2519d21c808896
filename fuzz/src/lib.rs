//! Fuzz harnesses for helm-guard's decoders of untrusted input, one function per target.
//!
//! The files in `fuzz_targets/` are one-line shims over these functions, so when an entry
//! point of the crate moves only this file changes. Each harness feeds the input to the real
//! decoder and checks the invariants that must hold whatever the input: no panic (libFuzzer
//! catches it), answers that are well formed, and no release value (a canary password in the
//! release the index holds) in anything the guard would send back.
//!
//! [`seeds`] writes the seed corpora (`fuzz/corpus/<target>/`) from the crate's own fixtures.

use std::io::Write as _;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use helm_guard::admission::review_body;
use helm_guard::demo::build::{History, postgres_chart, postgres_history};
use helm_guard::values::coalesce::UpgradeValues;
use helm_guard::helm::{DecodeLimits, RecordKind, RecordSource, decode, index_manifest, split_manifests};
use helm_guard::image::{self, Image};
use helm_guard::policy::{Mode, Settings, Webhook};
use helm_guard::helm::record::index_record;
use helm_guard::store::{Index, parse_document};
use helm_guard::values::{
    self, PathSegment, ValuesSummary, image_paths, join_path, split_path,
};
use helm_guard::text::WARNING_MAX as MAX_WARNING_LEN;
use helm_guard::release::Status;

pub mod seeds;

/// The password in the releases the harnesses use: it must never come back out.
pub const CANARY: &str = "CANARY-fuzz-pa55word";
/// A fixed "now", so that runs are reproducible.
const NOW: &str = "2026-11-29T12:00:00Z";
/// Decompression bound for fuzzing: small, so gzip bombs cost little and execs stay fast.
const FUZZ_LIMITS: DecodeLimits = DecodeLimits {
    max_decompressed: 1 << 20,
};

/// Release `db/db` (revision 1 superseded, 2 deployed) and release `app/app` with a
/// `pending-upgrade` revision 2 (so Helm writes are trusted and stale pins are looked for).
pub fn histories() -> Vec<History> {
    let db = postgres_history(CANARY);
    let values = |tag: &str| json!({"image": {"tag": tag}, "auth": {"postgresPassword": CANARY}});
    let mut app = History::install(
        "app",
        "app",
        &postgres_chart("12.0.0", "11.22.0"),
        values("11.22.0"),
    );
    app.begin_upgrade(
        &postgres_chart("14.0.0", "15.4.0"),
        json!({}),
        UpgradeValues::Default,
    );
    vec![db, app]
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut idx = Index::default();
        for h in histories() {
            for r in &h.revisions {
                if let Some(Ok(rev)) = index_record(&r.secret(), DecodeLimits::default()) {
                    idx.apply(rev);
                }
            }
        }
        idx
    })
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Target `admission`: an AdmissionReview body through to the answer, both webhooks, enforce
/// and audit, against an index holding releases.
pub fn admission(data: &[u8]) {
    let idx = index();
    // The one-pass typed reading never reads a body differently from the careful one.
    assert_ne!(
        helm_guard::admission::readings_agree(data, &Settings::new(Mode::Enforce)),
        Some(false),
        "the typed and careful readings differ"
    );
    for webhook in [Webhook::Validate, Webhook::Mutate] {
        for mode in [Mode::Enforce, Mode::Audit] {
            let mut settings = Settings::new(mode);
            settings.record_limits = FUZZ_LIMITS;
            let reviewed = review_body(webhook, data, idx, &settings, NOW);
            let answer: Value =
                serde_json::from_slice(&reviewed.to_json()).expect("the answer is JSON");
            let rsp = &answer["response"];
            assert!(rsp["allowed"].is_boolean(), "answer without allowed");
            assert!(rsp["uid"].is_string(), "answer without uid");
            if rsp["allowed"] == false {
                let code = rsp["status"]["code"].as_u64();
                assert!(matches!(code, Some(400 | 403)), "denial code {code:?}");
            }
            if let Some(patch) = rsp["patch"].as_str() {
                let bytes = STANDARD.decode(patch).expect("patch is base64");
                let _: Value = serde_json::from_slice(&bytes).expect("patch is JSON");
            }
            if !contains(data, CANARY) {
                let text = answer.to_string();
                assert!(!text.contains(CANARY), "release value in an answer");
            }
        }
    }
}

/// Target `record`: a release record, Secret or ConfigMap, through base64, gunzip and JSON.
///
/// The first byte says which layer the rest of the input is, so that the fuzzer can work on
/// the inner layers (release JSON, manifest) without having to find valid gzip first:
/// bit 0 Secret/ConfigMap; bits 1-2: 0 = release JSON (the harness gzips and encodes it),
/// 1 = a gzip stream (the harness encodes it), 2 = the Helm string of `data.release`,
/// 3 = the whole object as JSON.
pub fn record(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let kind = if selector & 1 == 0 {
        RecordKind::Secret
    } else {
        RecordKind::ConfigMap
    };
    let (namespace, name) = ("db", "sh.helm.release.v1.db.v2");
    let helm_string: Vec<u8> = match (selector >> 1) & 3 {
        0 => STANDARD.encode(gzip(rest)).into_bytes(),
        1 => STANDARD.encode(rest).into_bytes(),
        2 => rest.to_vec(),
        _ => {
            if let Ok(obj) = serde_json::from_slice::<Value>(rest) {
                check_record(&obj, rest);
            }
            return;
        }
    };
    // The decoder proper, on the Helm string.
    let src = RecordSource {
        kind,
        namespace,
        name,
        release: &helm_string,
    };
    if let Err(e) = decode(src, FUZZ_LIMITS) {
        check_error(&e.to_string(), rest);
    }
    // The same record as the object the API server or a watch delivers.
    let text = String::from_utf8_lossy(&helm_string);
    let obj = match kind {
        RecordKind::Secret => json!({
            "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
            "metadata": {"name": name, "namespace": namespace, "labels": {"owner": "helm"}},
            "data": {"release": STANDARD.encode(text.as_bytes())},
        }),
        _ => json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": {"owner": "helm"}},
            "data": {"release": text},
        }),
    };
    check_record(&obj, rest);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fn check_record(obj: &Value, input: &[u8]) {
    match index_record(obj, FUZZ_LIMITS) {
        Some(Ok(rev)) => {
            assert!(rev.revision > 0, "revision 0 indexed");
            let mut keys: Vec<_> = rev.workloads.iter().map(|w| &w.key).collect();
            let n = keys.len();
            keys.dedup();
            assert_eq!(keys.len(), n, "duplicate workloads in an index");
        }
        Some(Err(e)) => check_error(&e.to_string(), input),
        None => {}
    }
}

/// Decode errors name the object and the failure, never the content: bounded in length and
/// free of the canary unless the input itself held it.
fn check_error(msg: &str, input: &[u8]) {
    assert!(msg.len() < 1024, "decode error of {} bytes", msg.len());
    if !contains(input, CANARY) {
        assert!(!msg.contains(CANARY), "release content in an error");
    }
}

/// Target `manifest`: manifest splitting and workload YAML.
pub fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = 0u32;
    for doc in split_manifests(&text) {
        assert!(!doc.is_empty(), "empty document from split_manifests");
        assert!(
            text.contains(doc),
            "a document that is not a piece of the manifest"
        );
        parts += 1;
    }
    for doc in split_manifests(&text) {
        assert_ne!(
            helm_guard::helm::pruned_agrees(doc),
            Some(false),
            "the pruned reading of a document differs from the full parse"
        );
    }
    let idx = index_manifest(&text, "db");
    assert_eq!(
        idx.documents, parts,
        "index and split disagree on documents"
    );
    assert!(idx.unparsable <= idx.documents);
    for w in &idx.workloads {
        assert!(!w.key.name.is_empty(), "workload without a name");
        assert!(!w.key.namespace.is_empty(), "workload without a namespace");
    }
}

/// Target `image`: image references. The input is one or two references (split at the first
/// newline); sameness must be reflexive and symmetric, and never panic.
pub fn image(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\n').unwrap_or((&text, ""));
    let (ia, ib) = (Image::new(a), Image::new(b));
    assert!(ia.same_as(&ia), "an image differs from itself");
    assert_eq!(ia.same_as(&ib), ib.same_as(&ia), "same_as is not symmetric");
    assert_eq!(
        image::same(a, b),
        image::same(b, a),
        "same is not symmetric"
    );
    let _ = (ia.canonical(), ia.as_str(), image::brief(a));
    let _ = (image::delta(a, b), image::delta(b, a));
    let _ = values::looks_like_image_ref(a);
}

/// Target `values`: values documents (YAML or JSON). Up to three documents separated by a
/// `---` line: chart defaults, the config of revision 1 (deployed) and of revision 2
/// (`pending-upgrade`), then the stale-pin analysis over them.
pub fn values(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let docs: Vec<Value> = text
        .splitn(3, "\n---\n")
        .map(|d| parse_document(d).unwrap_or(Value::Null))
        .collect();
    let doc = |i: usize| docs.get(i).unwrap_or(&Value::Null);
    for v in &docs {
        for (path, value) in image_paths(v) {
            check_path(&path);
            assert!(value.len() <= 512, "image value of {} bytes", value.len());
        }
        let _ = values::count_leaves(v);
    }
    let old = ValuesSummary::of(1, "c", "1.0.0", Status::Deployed, doc(1), doc(0));
    let new = ValuesSummary::of(2, "c", "2.0.0", Status::PendingUpgrade, doc(2), doc(0));
    let _ = values::reused(&old, &new);
    let _ = values::persisted(&[&old], &new);
    for pin in values::analyze(&[&old], &new) {
        for line in pin.warning_lines("rel", "repo/chart") {
            assert!(
                line.len() <= MAX_WARNING_LEN,
                "warning of {} bytes",
                line.len()
            );
        }
    }
    // Paths as a user may type them: whatever splits must join back to the same segments.
    if let Some(segs) = split_path(&text) {
        assert_eq!(split_path(&join_path(&segs)), Some(segs), "path round trip");
    }
}

/// An image path read back into segments: the same path, and no secret-looking key on it.
fn check_path(path: &str) {
    let segs = split_path(path).expect("image paths split");
    assert_eq!(join_path(&segs), path, "image path does not round-trip");
    for s in &segs {
        if let PathSegment::Key(k) = s {
            let lower = k.to_ascii_lowercase();
            assert!(
                !["password", "passwd", "secret", "token", "credential"]
                    .iter()
                    .any(|w| lower.contains(w)),
                "image path through a secret key"
            );
        }
    }
}
