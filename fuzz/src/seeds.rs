//! Seed corpora from the crate's own fixtures: real AdmissionReviews (`helm_guard::demo::fixtures`),
//! real release records (`helm_guard::demo::build`), the manifests they hold, image references
//! from the tests and values documents. `cargo run --example seeds` writes them to
//! `fuzz/corpus/<target>/`; they are checked in, so this only runs when fixtures change.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use helm_guard::demo::fixtures::{Edit, record_review};
use helm_guard::demo::build::{encode_release, gzip_best};
use helm_guard::workload::WorkloadKind;

use crate::histories;

const PG11: &str = "docker.io/bitnami/postgresql:11.22.0";
const PG15: &str = "docker.io/bitnami/postgresql:15.4.0";
const EXPORTER: &str = "docker.io/bitnami/postgres-exporter:0.15.0";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Every seed, by target and file name.
pub fn all() -> BTreeMap<&'static str, Vec<(String, Vec<u8>)>> {
    let mut out = BTreeMap::new();
    out.insert("admission", admission());
    out.insert("record", record());
    out.insert("manifest", manifest());
    out.insert("image", image());
    out.insert("values", values());
    out
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn admission() -> Vec<(String, Vec<u8>)> {
    let set = |kind, old: &[(&str, &str)], new: &[(&str, &str)]| {
        Edit::kubectl_set_image(kind, "db", "db-postgresql", "db", old, new)
    };
    fn both(img: &str) -> [(&str, &str); 2] {
        [("postgresql", img), ("metrics", EXPORTER)]
    }
    let pinned = format!("{PG15}@{DIGEST}");
    let mut seeds = vec![
        (
            "rollback",
            set(WorkloadKind::StatefulSet, &both(PG15), &both(PG11)),
        ),
        (
            "same",
            set(WorkloadKind::StatefulSet, &both(PG15), &both(PG15)),
        ),
        (
            "digest",
            set(WorkloadKind::StatefulSet, &both(PG15), &both(&pinned)),
        ),
        (
            "by-helm",
            set(WorkloadKind::StatefulSet, &both(PG15), &both(PG11)).by_helm(),
        ),
        (
            "break-glass",
            set(WorkloadKind::StatefulSet, &both(PG15), &both(PG11)).with_break_glass("INC-1"),
        ),
        (
            "deployment",
            set(WorkloadKind::Deployment, &both(PG15), &both(PG11)),
        ),
        (
            "cronjob",
            set(WorkloadKind::CronJob, &both(PG15), &both(PG11)),
        ),
        ("pod", set(WorkloadKind::Pod, &both(PG15), &both(PG11))),
    ]
    .into_iter()
    .map(|(name, e)| (name.to_owned(), bytes(&e.review(&format!("uid-{name}")))))
    .collect::<Vec<_>>();
    let mut create = set(WorkloadKind::StatefulSet, &both(PG15), &both(PG11));
    create.old_images = None;
    seeds.push(("create".into(), bytes(&create.review("uid-create"))));
    let mut dry = set(WorkloadKind::StatefulSet, &both(PG15), &both(PG11));
    dry.dry_run = true;
    seeds.push(("dry-run".into(), bytes(&dry.review("uid-dry"))));
    // Helm's own release records passing through admission: the pending upgrade of app/app.
    for h in histories() {
        let last = h.last();
        let ns = &last.namespace;
        seeds.push((
            format!("secret-{ns}"),
            bytes(&record_review("uid-s", &last.secret(), "CREATE", "helm")),
        ));
        seeds.push((
            format!("configmap-{ns}"),
            bytes(&record_review(
                "uid-c",
                &last.config_map(),
                "UPDATE",
                "helm",
            )),
        ));
    }
    seeds.push(("empty".into(), Vec::new()));
    seeds.push((
        "no-request".into(),
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
    ));
    seeds.push(("delete".into(), bytes(&json!({"request": {"uid": "u", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"}, "operation": "DELETE", "name": "x", "namespace": "db", "oldObject": {"metadata": {"name": "x"}}}}))));
    seeds
}

fn record() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    // Only db/db revision 2 matches the name the harness gives the holding object.
    let h = &histories()[0];
    let rev = &h.revisions[1];
    let json = bytes(&rev.to_json());
    for (kind, bit) in [("secret", 0u8), ("configmap", 1u8)] {
        let layers: [(&str, u8, Vec<u8>); 3] = [
            ("json", 0, json.clone()),
            ("gzip", 1, gzip_best(&json)),
            ("helm", 2, encode_release(&json).into_bytes()),
        ];
        for (layer, sel, data) in layers {
            let mut v = vec![bit | (sel << 1)];
            v.extend(data);
            seeds.push((format!("{kind}-{layer}"), v));
        }
    }
    for (i, r) in h.revisions.iter().enumerate() {
        for (kind, obj) in [("secret", r.secret()), ("configmap", r.config_map())] {
            let mut v = vec![3 << 1];
            v.extend(bytes(&obj));
            seeds.push((format!("object-{kind}-{i}"), v));
        }
    }
    seeds
}

fn manifest() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for h in histories() {
        for r in &h.revisions {
            seeds.push((
                format!("{}-v{}", r.name, r.revision),
                r.manifest.clone().into_bytes(),
            ));
        }
    }
    let crafted: [(&str, &str); 4] = [
        (
            "flow",
            "---\n{apiVersion: apps/v1, kind: Deployment, metadata: {name: w}, spec: {template: {spec: {containers: [{name: c, image: 'nginx:1'}]}}}}\n",
        ),
        (
            "anchors",
            "---\nkind: Pod\napiVersion: v1\nmetadata: {name: p}\nspec:\n  containers:\n  - &c {name: a, image: busybox}\n  - *c\n",
        ),
        (
            "cronjob",
            "---\n# Source: x/templates/cj.yaml\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: cj\n  namespace: other\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          initContainers:\n          - name: i\n            image: busybox:1.36\n          containers:\n          - name: c\n            image: quay.io/x/y:1\n",
        ),
        (
            "mixed",
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  k: dg==\n---\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: d\nspec:\n  template:\n    spec:\n      containers:\n      - name: c\n        image: nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        ),
    ];
    for (name, text) in crafted {
        seeds.push((name.to_owned(), text.as_bytes().to_vec()));
    }
    seeds
}

fn image() -> Vec<(String, Vec<u8>)> {
    let pairs: [(&str, &str); 12] = [
        ("nginx:1.27", "docker.io/library/nginx:1.27"),
        ("nginx", "docker.io/library/nginx:latest"),
        ("bitnami/pg:1", "docker.io/bitnami/pg:1"),
        ("index.docker.io/library/nginx:1", "nginx:1"),
        ("quay.io/x/y:1", "quay.io/x/y:2"),
        (
            "postgres:15@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "postgres:15",
        ),
        (
            "postgres@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "postgres:11@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
        (
            "localhost:5000/team/app:v1.2.3-rc.1",
            "localhost:5000/team/app",
        ),
        (
            "registry.example.com:443/a/b/c:tag_1",
            "REGISTRY.example.com/a/b:1",
        ),
        (" nginx:1.27 ", ":1.27"),
        (PG15, PG11),
        (
            "ghcr.io/o/r@sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ghcr.io/o/r",
        ),
    ];
    pairs
        .iter()
        .enumerate()
        .map(|(i, (a, b))| (format!("pair-{i}"), format!("{a}\n{b}").into_bytes()))
        .collect()
}

fn values() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for h in histories() {
        let first = &h.revisions[0];
        let last = h.last();
        // JSON documents: chart defaults, the two configs.
        let doc = format!(
            "{}\n---\n{}\n---\n{}",
            serde_json::to_string(&last.chart_values).unwrap_or_default(),
            serde_json::to_string(&first.config).unwrap_or_default(),
            serde_json::to_string(&last.config).unwrap_or_default(),
        );
        seeds.push((format!("history-{}", last.name), doc.into_bytes()));
    }
    let yaml: [(&str, &str); 4] = [
        (
            "yaml-pin",
            "image:\n  registry: docker.io\n  repository: bitnami/postgresql\n  tag: \"15.4.0\"\nmetrics:\n  image: {repository: bitnami/postgres-exporter, tag: 0.15.0}\n---\nimage:\n  tag: 11.22.0\n---\nimage:\n  tag: 11.22.0\nauth:\n  postgresPassword: CANARY\n",
        ),
        (
            "yaml-lists",
            "sidecars:\n- name: s\n  image: busybox:1.36\ninitImage:\n  tag: 3\nglobal:\n  imageRegistry: quay.io\nenv:\n- name: X\n  value: a:b\n---\nsidecars:\n- image: busybox:1.35\n---\nsidecars:\n- image: busybox:1.35\n",
        ),
        (
            "yaml-keys",
            "\"a.b\":\n  image: x/y:1\n\"c[0]\": {tag: \"1\"}\nimageCredentials:\n  username: u\n  password: p\n---\n\"a.b\": {image: x/y:0}\n---\n\"a.b\": {image: x/y:0}\n",
        ),
        ("path", "cache.image\\.x[0].tag"),
    ];
    for (name, text) in yaml {
        seeds.push((name.to_owned(), text.as_bytes().to_vec()));
    }
    seeds
}
