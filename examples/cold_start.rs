//! Cold start and memory of the release store, through the same path as the watch
//! (`watch::drive`: decode on the decode threads, relist applied as it arrives).
//!
//! ```sh
//! cargo run --release --example cold_start -- 10000          # time: decode + index of N releases
//! cargo run --release --example cold_start -- 10000 memory   # resident bytes per indexed release
//! ```
//!
//! Releases are the bundled PostgreSQL chart (a StatefulSet with two containers, a Service, a
//! Secret), one per namespace, `REVS` revisions each (install + upgrades), as Helm writes them.
//! Memory is the growth of resident memory between 1 000 and N + 1 000 releases, with each
//! record generated, decoded and dropped as it goes (as a watch does), so only what the
//! index keeps accumulates.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::DeserializeGuard;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use helm_guard::demo::build::{History, postgres_chart};
use helm_guard::helm::{DecodeLimits, RecordKind};
use helm_guard::metrics::Metrics;
use helm_guard::store::{Index, SharedIndex};
use helm_guard::values::coalesce::UpgradeValues;
use helm_guard::watch::{self, Feed};

type Item = Result<Event<DeserializeGuard<Secret>>, watcher::Error>;

fn release_secrets(i: usize, revs: usize) -> Vec<Secret> {
    let ns = format!("team-{i}");
    let name = format!("db-{i}");
    let mut h = History::install(
        &name,
        &ns,
        &postgres_chart("12.0.0", "11.22.0"),
        json!({"auth": {"postgresPassword": format!("pw-{i}")}}),
    );
    for r in 1..revs {
        h.begin_upgrade(
            &postgres_chart(&format!("12.{r}.0"), &format!("15.{r}.0")),
            json!({}),
            UpgradeValues::Default,
        );
        h.complete();
    }
    h.revisions
        .iter()
        .map(|r| serde_json::from_value(r.secret()).expect("a Secret"))
        .collect()
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn feed() -> (SharedIndex, Arc<Feed>, Arc<AtomicBool>) {
    let index: SharedIndex = Arc::new(RwLock::new(Index::default()));
    let ready = Arc::new(AtomicBool::new(false));
    let feed = Feed::new(
        index.clone(),
        DecodeLimits::default(),
        Metrics::unregistered().store,
        ready.clone(),
    );
    (index, feed, ready)
}

fn main() {
    helm_guard::tls::install_provider();
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let memory = args.get(2).is_some_and(|a| a == "memory");
    let revs: usize = std::env::var("REVS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    if memory {
        // Apply-by-apply (watch events), records generated lazily.
        let (index, feed, _ready) = feed();
        let source = feed.add_source(RecordKind::Secret, None);
        let (tx, rx) = futures::channel::mpsc::channel::<Item>(16);
        let driver = rt.spawn(watch::drive(feed.clone(), source, rx));
        let warm = 1_000;
        let mut base = 0;
        rt.block_on(async {
            let mut tx = tx;
            use futures::SinkExt;
            tx.send(Ok(Event::Init)).await.expect("send");
            for i in 0..warm + n {
                if i == warm {
                    // Let the driver catch up, then take the baseline.
                    while index.read().expect("lock").len() < warm {
                        tokio::task::yield_now().await;
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    base = rss_bytes();
                }
                for s in release_secrets(i, revs) {
                    tx.send(Ok(Event::Apply(DeserializeGuard(Ok(s)))))
                        .await
                        .expect("send");
                }
            }
            while index.read().expect("lock").len() < warm + n {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        let grown = rss_bytes().saturating_sub(base);
        println!(
            "memory: {n} releases x {revs} revision(s): RSS +{:.1} MiB -> {} bytes per release ({} per revision); index holds {} releases",
            grown as f64 / (1 << 20) as f64,
            grown / n as u64,
            grown / (n * revs) as u64,
            index.read().expect("lock").len()
        );
        driver.abort();
        return;
    }

    let t = Instant::now();
    let mut items: Vec<Item> = vec![Ok(Event::Init)];
    let mut bytes = 0usize;
    for i in 0..n {
        for s in release_secrets(i, revs) {
            bytes += s
                .data
                .as_ref()
                .and_then(|d| d.get("release"))
                .map_or(0, |b| b.0.len());
            items.push(Ok(Event::InitApply(DeserializeGuard(Ok(s)))));
        }
    }
    items.push(Ok(Event::InitDone));
    println!(
        "generated {} records ({:.1} MiB of data.release) in {:.2?} (not counted)",
        items.len() - 2,
        bytes as f64 / (1 << 20) as f64,
        t.elapsed()
    );
    let (index, feed, ready) = feed();
    let source = feed.add_source(RecordKind::Secret, None);
    let t = Instant::now();
    rt.block_on(watch::drive(
        feed,
        source,
        futures::stream::iter(items).boxed(),
    ));
    let elapsed = t.elapsed();
    assert!(ready.load(Ordering::Acquire));
    println!(
        "cold start: {n} releases x {revs} revision(s) decoded and indexed in {elapsed:.2?} ({:.0} records/s), ready; index holds {} releases",
        (n * revs) as f64 / elapsed.as_secs_f64(),
        index.read().expect("lock").len()
    );
}
