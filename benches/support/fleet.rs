//! A fleet of ~1,000 releases indexed through the real decode path, and the kubectl edits
//! of their workloads that the benches and the load test send.

use std::sync::Arc;

use helm_guard::demo::build::{Chart, History};
use helm_guard::demo::fixtures::Edit;
use helm_guard::helm::record::index_record;
use helm_guard::helm::{DecodeLimits, RevisionIndex, WorkloadImages};
use helm_guard::store::Index;
use helm_guard::values::coalesce::UpgradeValues;
use helm_guard::workload::WorkloadKind;
use serde_json::json;

use super::chart::app_chart;

/// A fleet of `n` releases in 40 namespaces, each with 1–3 components, installed and
/// upgraded once (two revisions); every tenth has an upgrade in progress (a `pending-upgrade`
/// third revision). All records go through the real decode path.
pub struct Fleet {
    pub index: Index,
    /// The deployed revision of every release, in order.
    pub deployed: Vec<Arc<RevisionIndex>>,
    pub records: usize,
    /// The release Secrets themselves, when asked for ([`fleet_with_secrets`]).
    #[allow(dead_code)] // read by the load example only
    pub secrets: Vec<serde_json::Value>,
}

pub fn fleet(n: usize) -> Fleet {
    build(n, false)
}

/// [`fleet`], keeping every release Secret (to write them out for `serve --releases`).
#[allow(dead_code)]
pub fn fleet_with_secrets(n: usize) -> Fleet {
    build(n, true)
}

fn charts() -> Vec<Chart> {
    (1..=3).map(|k| app_chart(k * 9_000)).collect()
}

/// Release `i` of the fleet, as Helm wrote it.
fn history(i: usize, charts: &[Chart]) -> History {
    let name = format!("svc-{i:04}");
    let namespace = format!("team-{:02}", i % 40);
    let chart = &charts[i % charts.len()];
    let mut h = History::install(
        &name,
        &namespace,
        chart,
        json!({"fullnameOverride": name, "auth": {"password": format!("CANARY-{i}")}}),
    );
    h.begin_upgrade(
        chart,
        json!({"sidecars": {"proxy": {"image": "docker.io/envoyproxy/envoy:v1.31.3"}}}),
        UpgradeValues::ResetThenReuseValues,
    );
    h.complete();
    if i % 10 == 9 {
        h.begin_upgrade(
            chart,
            json!({"sidecars": {"proxy": {"image": "docker.io/envoyproxy/envoy:v1.32.0"}}}),
            UpgradeValues::ResetThenReuseValues,
        );
    }
    h
}

/// One `helm upgrade` of a fleet release as the API server sees it: the Secrets Helm writes,
/// in order (the new revision `pending-upgrade`, the old one `superseded`, the new one
/// `deployed`), and which revision must end up deployed.
#[allow(dead_code)] // used by the load example's churn run
pub struct Upgrade {
    pub release: helm_guard::helm::ReleaseKey,
    pub revision: u32,
    pub writes: Vec<serde_json::Value>,
}

/// Upgrades of the first `n` releases without an upgrade in progress (a new proxy image).
#[allow(dead_code)]
pub fn upgrades(n: usize) -> Vec<Upgrade> {
    let charts = charts();
    (0..)
        .filter(|i| i % 10 != 9)
        .take(n)
        .map(|i| {
            let mut h = history(i, &charts);
            let chart = &charts[i % charts.len()];
            h.begin_upgrade(
                chart,
                json!({"sidecars": {"proxy": {"image": "docker.io/envoyproxy/envoy:v1.33.0"}}}),
                UpgradeValues::ResetThenReuseValues,
            );
            let pending = h.last().secret();
            h.complete();
            let n = h.revisions.len();
            let last = h.last();
            Upgrade {
                release: helm_guard::helm::ReleaseKey::new(&last.namespace, &last.name),
                revision: last.revision,
                writes: vec![pending, h.revisions[n - 2].secret(), last.secret()],
            }
        })
        .collect()
}

fn build(n: usize, keep: bool) -> Fleet {
    let charts = charts();
    let mut index = Index::default();
    let mut deployed = Vec::with_capacity(n);
    let mut records = 0;
    let mut secrets = Vec::new();
    for i in 0..n {
        let h = history(i, &charts);
        let mut dep = None;
        for r in &h.revisions {
            let secret = r.secret();
            let rev = index_record(&secret, DecodeLimits::default())
                .expect("a release record")
                .expect("the record decodes");
            assert_eq!(rev.unparsable_documents, 0, "fixture manifest parses");
            if rev.status == helm_guard::helm::Status::Deployed {
                dep = Some(rev.clone());
            }
            index.apply(rev);
            records += 1;
            if keep {
                secrets.push(secret);
            }
        }
        deployed.push(dep.expect("a deployed revision"));
    }
    Fleet {
        index,
        deployed,
        records,
        secrets,
    }
}

/// The first workload of `kind` that release `i` renders.
pub fn workload_of(fleet: &Fleet, i: usize, kind: WorkloadKind) -> Option<&WorkloadImages> {
    fleet.deployed[i % fleet.deployed.len()]
        .workloads
        .iter()
        .find(|w| w.key.kind == kind)
}

/// What an edit does to the images of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The main container's image changed by hand to one the chart does not render.
    Drift,
    /// The images are left alone (a label or replica edit).
    Unchanged,
}

/// A `kubectl set image` (or any image-preserving kubectl edit) of release `i`'s Deployment.
pub fn edit_for(fleet: &Fleet, i: usize, change: Change) -> Edit {
    let rev = &fleet.deployed[i % fleet.deployed.len()];
    let w = workload_of(fleet, i, WorkloadKind::Deployment)
        .or_else(|| rev.workloads.first())
        .expect("release renders a workload");
    let old: Vec<(String, String)> = w
        .containers
        .iter()
        .map(|c| (c.name.to_string(), c.image.as_str().to_owned()))
        .collect();
    let mut new = old.clone();
    if change == Change::Drift {
        // The first non-init container is the component itself; pin it to a hotfix build.
        if let Some((pos, _)) = w.containers.iter().enumerate().find(|(_, c)| !c.init) {
            new[pos].1 = format!("ghcr.io/someone/hotfix:{}-debug", w.key.name);
        }
    }
    set_image(w, rev, old, new)
}

/// A `kubectl set image` of workload `w` of revision `rev`, from `old` to `new` images.
pub fn set_image(
    w: &WorkloadImages,
    rev: &RevisionIndex,
    old: Vec<(String, String)>,
    new: Vec<(String, String)>,
) -> Edit {
    let mut e = Edit::kubectl_set_image(
        w.key.kind,
        &w.key.namespace,
        &w.key.name,
        &rev.release.name,
        &[],
        &[],
    );
    e.old_images = Some(old);
    e.new_images = new;
    e
}
