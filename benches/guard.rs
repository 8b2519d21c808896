//! helm-guard's hot paths, measured with criterion: `cargo bench --bench guard`.
//!
//! Targets (see the report in the PR): decode+index of one release record with a ~100 KiB
//! manifest ≤ 10 ms and with a ~1 MiB manifest ≤ 50 ms; one decision ≤ 20 µs excluding JSON
//! parsing.
//!
//! * `decode_index/{100KiB,1MiB}`: `helm::record::index_record` on a Helm Secret, end to end (API
//!   base64 → Helm base64 → gunzip → JSON → manifest split → workload parse → index);
//!   `decode_index/1MiB_workloads`: the same with every document a workload (all parsed).
//! * `decode_parts/1MiB/*`: the same record in parts — `helm::decode` alone (base64, gunzip,
//!   JSON), `helm::index_manifest` alone, and `RevisionIndex::from_decoded` (manifest index
//!   plus values summary) — to show where the time goes.
//! * `decision/update/*`: `policy::decide` on prepared facts against an index of 1,000
//!   releases (2–3 revisions each, every record decoded by the real path).
//! * `admission/parse_and_decide/*`: `admission::review_body` on the raw body plus the
//!   response serialisation: the whole request path minus HTTP and TLS.
//! * `parts/*`: image reference parsing and the two halves of the admission path (JSON to
//!   the typed request view with objects kept raw, then facts), for where the time goes.

use std::hint::black_box;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use helm_guard::admission::{self, Outcome};
use helm_guard::helm::record::index_record;
use helm_guard::helm::{self, DecodeLimits, RecordKind, RecordSource};
use helm_guard::policy::{self, Mode, Settings, Webhook};
use helm_guard::store::Index;

mod support;

use helm_guard::demo::build::{History, ReleaseRecord, gzip_best};
use serde_json::json;
use support::fleet::{Change, Fleet, edit_for};
use support::review::realistic_review;

const NOW: &str = "2026-11-26T12:00:00Z";

/// The fleet the decision benches look things up in, built once.
static FLEET: LazyLock<(RwLock<Index>, Fleet)> = LazyLock::new(|| {
    let started = std::time::Instant::now();
    let mut fleet = support::fleet::fleet(1_000);
    let index = std::mem::take(&mut fleet.index);
    eprintln!(
        "fleet: {} releases, {} records decoded and indexed in {:.2?}",
        index.len(),
        fleet.records,
        started.elapsed()
    );
    (RwLock::new(index), fleet)
});

fn decode_index(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_index");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(8));
    let cases = [
        ("100KiB", big_release(100 << 10)),
        ("1MiB", big_release(1 << 20)),
        ("1MiB_workloads", workload_release(1 << 20)),
    ];
    for (label, record) in cases {
        let sizes = record_sizes(&record);
        let secret = record.secret();
        let rev = index_record(&secret, DecodeLimits::default())
            .expect("a release record")
            .expect("the record decodes");
        assert_eq!(rev.unparsable_documents, 0, "every fixture document parses");
        let containers: usize = rev.workloads.iter().map(|w| w.containers.len()).sum();
        eprintln!(
            "record {label}: manifest {} B in {} documents ({} workloads, {} containers); \
             release JSON {} B; gzip {} B ({:.1}x); Secret object {} B",
            sizes.manifest,
            sizes.documents,
            rev.workloads.len(),
            containers,
            sizes.json,
            sizes.gzip,
            sizes.json as f64 / sizes.gzip as f64,
            sizes.secret_json,
        );
        g.throughput(Throughput::Bytes(sizes.manifest as u64));
        g.bench_function(label, |b| {
            b.iter(|| index_record(black_box(&secret), DecodeLimits::default()))
        });
    }
    g.finish();
}

fn decode_parts(c: &mut Criterion) {
    let record = big_release(1 << 20);
    let helm_string = record.encoded();
    let name = record.object_name();
    assert_eq!(
        STANDARD.encode(helm_string.as_bytes()),
        record.secret()["data"]["release"]
            .as_str()
            .expect("data.release")
    );
    let source = RecordSource {
        kind: RecordKind::Secret,
        namespace: &record.namespace,
        name: &name,
        release: helm_string.as_bytes(),
    };
    let mut g = c.benchmark_group("decode_parts/1MiB");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(6));
    g.bench_function("base64_gunzip_json", |b| {
        b.iter(|| helm::decode(black_box(source), DecodeLimits::default()))
    });
    g.bench_function("index_manifest", |b| {
        b.iter(|| helm::index_manifest(black_box(&record.manifest), "prod"))
    });
    // Manifest index plus everything else `from_decoded` keeps (the values summary).
    let decoded = helm::decode(source, DecodeLimits::default()).expect("decodes");
    g.bench_function("from_decoded", |b| {
        b.iter(|| helm::RevisionIndex::from_decoded(black_box(&decoded)))
    });
    g.finish();
}

/// The policy facts of a realistic review of an edit of release `i`.
fn facts(i: usize, change: Change, settings: &Settings) -> policy::Facts {
    let (_, fleet) = &*FLEET;
    let edit = edit_for(fleet, i, change);
    let body = serde_json::to_vec(&realistic_review(&edit, "bench-uid", 7)).expect("serialises");
    let req = admission::parse(&body).expect("parses");
    admission::facts(&req, settings).expect("facts")
}

fn decision(c: &mut Criterion) {
    let (index, _) = &*FLEET;
    let mut g = c.benchmark_group("decision");
    // Release 500: a Deployment with four containers (one init), not mid-upgrade.
    let cases = [
        (
            "update/enforce_deny",
            Webhook::Validate,
            Mode::Enforce,
            Change::Drift,
        ),
        (
            "update/no_drift_allow",
            Webhook::Validate,
            Mode::Enforce,
            Change::Unchanged,
        ),
        (
            "update/audit_mutate_patch",
            Webhook::Mutate,
            Mode::Audit,
            Change::Drift,
        ),
    ];
    for (label, webhook, mode, change) in cases {
        let settings = Settings::new(mode);
        let req = facts(500, change, &settings);
        let v = policy::decide(webhook, &req, index, &settings, NOW);
        match label {
            "update/enforce_deny" => assert!(!v.allowed && !v.drifts.is_empty(), "{v:?}"),
            "update/no_drift_allow" => assert!(v.allowed && v.warnings.is_empty(), "{v:?}"),
            _ => assert!(v.allowed && !v.patch.is_empty(), "{v:?}"),
        }
        g.bench_function(label, |b| {
            b.iter(|| policy::decide(webhook, black_box(&req), index, &settings, NOW))
        });
    }
    g.finish();
}

fn admission_path(c: &mut Criterion) {
    let (index, fleet) = &*FLEET;
    let mut g = c.benchmark_group("admission/parse_and_decide");
    let drift = edit_for(fleet, 500, Change::Drift);
    let cases = [
        (
            "enforce_deny",
            Webhook::Validate,
            Mode::Enforce,
            realistic_review(&drift, "bench-uid", 7),
        ),
        (
            "audit_mutate_patch",
            Webhook::Mutate,
            Mode::Audit,
            realistic_review(&drift, "bench-uid", 7),
        ),
        (
            "enforce_deny_minimal_body",
            Webhook::Validate,
            Mode::Enforce,
            drift.review("bench-uid"),
        ),
    ];
    for (label, webhook, mode, review) in cases {
        let body = serde_json::to_vec(&review).expect("serialises");
        let settings = Settings::new(mode);
        let r = admission::review_body(webhook, &body, index, &settings, NOW);
        let Outcome::Judged(v) = &r.outcome else {
            panic!("not judged: {:?}", r.outcome)
        };
        assert_eq!(v.allowed, webhook == Webhook::Mutate, "{v:?}");
        eprintln!("admission {label}: request body {} B", body.len());
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(label, |b| {
            b.iter(|| {
                let r = admission::review_body(webhook, black_box(&body), index, &settings, NOW);
                r.to_json()
            })
        });
    }
    g.finish();
}

/// The pieces of the request path that the profile points at.
fn parts(c: &mut Criterion) {
    let (_, fleet) = &*FLEET;
    let mut g = c.benchmark_group("parts");
    for (label, raw) in [
        ("image_new/short", "nginx:1.27"),
        (
            "image_new/ecr",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/platform/api:v1.42.0",
        ),
        (
            "image_new/digest",
            "registry.internal.example.com:5000/platform/api@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
    ] {
        g.bench_function(label, |b| {
            b.iter(|| helm_guard::image::Image::new(black_box(raw)))
        });
    }
    let edit = edit_for(fleet, 500, Change::Drift);
    let body = serde_json::to_vec(&realistic_review(&edit, "bench-uid", 7)).expect("serialises");
    g.bench_function("admission_parse_only", |b| {
        b.iter(|| admission::parse(black_box(&body)).expect("parses"))
    });
    let req = admission::parse(&body).expect("parses");
    let settings = Settings::new(Mode::Enforce);
    g.bench_function("admission_facts_only", |b| {
        b.iter(|| admission::facts(black_box(&req), &settings).expect("facts"))
    });
    g.finish();
}

/// One release (one `deployed` revision) of the chart with a manifest of ~`target_bytes`.
pub fn big_release(target_bytes: usize) -> ReleaseRecord {
    release_of(&support::chart::app_chart(target_bytes))
}

/// As [`big_release`], every manifest document a workload (the indexer's worst case).
pub fn workload_release(target_bytes: usize) -> ReleaseRecord {
    release_of(&support::chart::workload_chart(target_bytes))
}

fn release_of(chart: &helm_guard::demo::build::Chart) -> ReleaseRecord {
    let h = History::install(
        "platform",
        "prod",
        chart,
        json!({"fullnameOverride": "platform", "auth": {"password": "CANARY-user-pw"}}),
    );
    h.last().clone()
}

/// Sizes of one encoded record, for the report.
pub struct RecordSizes {
    pub manifest: usize,
    pub documents: usize,
    pub json: usize,
    pub gzip: usize,
    pub secret_json: usize,
}

pub fn record_sizes(r: &ReleaseRecord) -> RecordSizes {
    let json = r.to_json().to_string();
    RecordSizes {
        manifest: r.manifest.len(),
        documents: helm_guard::helm::split_manifests(&r.manifest).count(),
        json: json.len(),
        gzip: gzip_best(json.as_bytes()).len(),
        secret_json: r.secret().to_string().len(),
    }
}

criterion_group!(
    benches,
    decode_index,
    decode_parts,
    decision,
    admission_path,
    parts
);
criterion_main!(benches);
