//! Resident memory per workload kept by the live drift inventory (`serve --inventory`).
//!
//! ```sh
//! cargo run --release --example inventory_memory -- 30000         # bytes per kept workload
//! cargo run --release --example inventory_memory -- 30000 judge   # one full pass, timed
//! ```
//!
//! N workloads as the watches keep them: per release-like group a Deployment, its ReplicaSet
//! and a Pod (N/3 each, one namespace per group), two containers each, two `managedFields`
//! image owners, the Helm annotations, owner references and a pod-template-hash — the
//! [`LiveWorkload`] view and its judgement, as [`State::upsert`] stores them. The release
//! index is empty (its memory is the store's, measured by `cold_start`), so each judgement is
//! empty too: drift adds one finding per drifted container on top. Memory is the growth of
//! resident memory across the N upserts, divided by N.
//!
//! `judge`: N/3 releases of the bundled PostgreSQL chart (one per namespace) in the index, and
//! per release its StatefulSet (drifted in one release of 20) and two Pods; prints the time of
//! one full pass (what follows every completed list) over the N workloads.

use std::sync::RwLock;

use helm_guard::demo::build::{History, postgres_chart};
use helm_guard::helm::record::index_record;
use helm_guard::helm::{DecodeLimits, ReleaseKey};
use helm_guard::image::Image;
use helm_guard::inventory::State;
use helm_guard::policy::live::LiveWorkload;
use helm_guard::policy::{ImageOwner, Owner};
use helm_guard::store::Index;
use helm_guard::workload::{Container, WorkloadKind};

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn workload(kind: WorkloadKind, i: usize) -> LiveWorkload {
    let ns = format!("team-{i:05}");
    let (name, owners) = match kind {
        WorkloadKind::Deployment => (format!("app-{i}-web"), Vec::new()),
        WorkloadKind::ReplicaSet => (
            format!("app-{i}-web-5d8f7c9b4"),
            vec![Owner {
                kind: "Deployment".into(),
                name: format!("app-{i}-web"),
            }],
        ),
        _ => (
            format!("app-{i}-web-5d8f7c9b4-x7k2p"),
            vec![Owner {
                kind: "ReplicaSet".into(),
                name: format!("app-{i}-web-5d8f7c9b4"),
            }],
        ),
    };
    let container = |n: &str, image: &str| Container {
        name: n.into(),
        image: Image::new(image),
        init: false,
    };
    let owner = |c: &str, m: &str| ImageOwner {
        container: c.into(),
        manager: m.into(),
        time: "2026-11-27T08:00:00Z".into(),
    };
    LiveWorkload {
        kind,
        namespace: ns.clone(),
        name,
        release_annotation: (kind == WorkloadKind::Deployment)
            .then(|| ReleaseKey::new(&ns, &format!("app-{i}"))),
        allow_drift: None,
        drift_mark: None,
        owners,
        pod_template_hash: (kind != WorkloadKind::Deployment).then(|| "5d8f7c9b4".into()),
        containers: vec![
            container("web", "registry.example.com/team/web-frontend:1.42.7"),
            container("metrics", "docker.io/bitnami/nginx-exporter:0.11.0"),
        ],
        image_owners: vec![owner("web", "helm"), owner("metrics", "helm")],
    }
}

fn sts(i: usize, pod: Option<usize>, drifted: bool) -> LiveWorkload {
    let ns = format!("team-{i:05}");
    let image = if drifted { "9.6" } else { "11.22.0" };
    let (kind, name, owners) = match pod {
        None => (
            WorkloadKind::StatefulSet,
            "db-postgresql".to_owned(),
            Vec::new(),
        ),
        Some(p) => (
            WorkloadKind::Pod,
            format!("db-postgresql-{p}"),
            vec![Owner {
                kind: "StatefulSet".into(),
                name: "db-postgresql".into(),
            }],
        ),
    };
    LiveWorkload {
        kind,
        namespace: ns.clone(),
        name,
        release_annotation: pod.is_none().then(|| ReleaseKey::new(&ns, "db")),
        allow_drift: None,
        drift_mark: None,
        owners,
        pod_template_hash: None,
        containers: vec![
            Container {
                name: "postgresql".into(),
                image: Image::new(&format!("docker.io/bitnami/postgresql:{image}")),
                init: false,
            },
            Container {
                name: "metrics".into(),
                image: Image::new("docker.io/bitnami/postgres-exporter:0.15.0"),
                init: false,
            },
        ],
        image_owners: vec![ImageOwner {
            container: "postgresql".into(),
            manager: if drifted { "kubectl-set" } else { "helm" }.into(),
            time: "2026-11-27T08:00:00Z".into(),
        }],
    }
}

fn judge(n: usize) {
    let releases = n / 3;
    let index = RwLock::new(Index::default());
    let start = std::time::Instant::now();
    for i in 0..releases {
        let h = History::install(
            "db",
            &format!("team-{i:05}"),
            &postgres_chart("12.0.0", "11.22.0"),
            serde_json::json!({}),
        );
        for r in &h.revisions {
            if let Some(Ok(rev)) = index_record(&r.secret(), DecodeLimits::default()) {
                index.write().expect("lock").apply(rev);
            }
        }
    }
    println!("{releases} releases indexed in {:?}", start.elapsed());
    let mut state = State::new(vec!["helm".into()]);
    for i in 0..releases {
        let drifted = i % 20 == 0;
        state.upsert(sts(i, None, drifted), &index);
        for p in 0..2 {
            state.upsert(sts(i, Some(p), drifted), &index);
        }
    }
    let keys = state.keys();
    let start = std::time::Instant::now();
    state.rejudge(&keys, &index);
    let took = start.elapsed();
    let drifted: usize = (0..releases)
        .map(|i| state.counts(&format!("team-{i:05}")).drifted)
        .sum();
    println!(
        "full pass over {} workloads: {took:?} ({drifted} drifted containers)",
        keys.len()
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30_000);
    if std::env::args().nth(2).is_some_and(|a| a == "judge") {
        judge(n);
        return;
    }
    let index = RwLock::new(Index::default());
    let mut state = State::new(vec!["helm".into()]);
    // Warm up allocator arenas and the map's first nodes.
    for i in 0..300 {
        state.upsert(workload(WorkloadKind::Deployment, n + i), &index);
    }
    let before = rss_bytes();
    for i in 0..n / 3 {
        for kind in [
            WorkloadKind::Deployment,
            WorkloadKind::ReplicaSet,
            WorkloadKind::Pod,
        ] {
            state.upsert(workload(kind, i), &index);
        }
    }
    let after = rss_bytes();
    let kept = state.len() - 300;
    println!(
        "{kept} workloads kept: {:.1} MiB resident, {} bytes per workload",
        after.saturating_sub(before) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) / kept.max(1) as u64
    );
}
