//! Cold start, memory and relist cost of the release store with a *realistic* fleet, through
//! the production path: kube's paged list/watch (`watch::watch_stream`) against an API
//! server stand-in, `watch::drive`, the shared index.
//!
//! ```sh
//! cargo run --release --example fleet -- 10000 10      # N releases x REVS revisions each
//! ```
//!
//! The stand-in runs in a child process (this same binary, `serve`), so the records it holds
//! (gigabytes at 10k x 10) never count in the measured process. It generates the fleet first
//! (not timed), then answers paged LISTs of `owner=helm` Secrets and WATCHes; `POST /expire`
//! ends every watch with `410 Expired`, which forces kube's watcher to relist.
//!
//! The fleet follows the shape of real clusters: Secrets of ~14 KiB median, 5 % of releases
//! with ~300 KiB manifests (dozens of workloads), two per thousand (at least two) near the
//! 1 MiB Secret limit (an embedded dashboard-like blob), a bulky chart `values` shared by the
//! releases of the same chart, each release upgraded REVS - 1 times with new image tags
//! (`demo::build::History`: Helm's statuses, coalescing and record layout). Records are
//! gzipped at the fast level to keep generation short; Helm uses the best level, which only
//! makes its records a little smaller.
//!
//! Printed: time from the watch's start to ready, RSS before the watch, after the sync
//! (`VmRSS`) and its peak (`VmHWM`), bytes per release, then the same for one forced relist.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::StreamExt;
use serde_json::{Value, json};

use helm_guard::demo::build::{Chart, History, ReleaseRecord};
use helm_guard::helm::{DecodeLimits, RecordKind};
use helm_guard::metrics::Metrics;
use helm_guard::store::{Index, SharedIndex};
use helm_guard::values::coalesce::UpgradeValues;
use helm_guard::watch::{self, Feed};

// ---------------------------------------------------------------------------------------
// The fleet.

/// A small deterministic PRNG (xorshift64*), so every run builds the same fleet.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "replica",
    "timeout",
    "enabled",
    "server",
    "cluster",
    "metrics",
    "ingress",
    "volume",
    "storage",
    "backend",
    "service",
    "account",
    "secret",
    "config",
    "logging",
    "level",
    "debug",
    "info",
    "warn",
    "retry",
    "backoff",
    "period",
    "seconds",
    "port",
    "http",
    "grpc",
    "tls",
    "cert",
    "issuer",
    "annotation",
    "label",
    "selector",
    "affinity",
    "toleration",
    "node",
    "zone",
    "region",
    "memory",
    "cpu",
    "limit",
    "request",
    "probe",
    "liveness",
    "readiness",
    "startup",
    "path",
    "host",
    "header",
    "cache",
    "size",
    "queue",
    "worker",
    "thread",
    "pool",
    "max",
    "min",
    "interval",
    "window",
    "shard",
    "partition",
    "topic",
    "group",
    "consumer",
    "producer",
];

/// `kib` KiB of config-like text (compresses ~3x, as real ConfigMaps and values do).
fn prose(rng: &mut Rng, kib: usize) -> String {
    let mut s = String::with_capacity(kib * 1024 + 64);
    while s.len() < kib * 1024 {
        let a = WORDS[rng.below(WORDS.len() as u64) as usize];
        let b = WORDS[rng.below(WORDS.len() as u64) as usize];
        s.push_str(&format!(
            "{a}.{b}_{} = {}\n",
            rng.below(100),
            rng.below(100_000)
        ));
    }
    s
}

/// `kib` KiB of base64 noise (barely compresses: an embedded dashboard, a bundle of certs).
fn blob(rng: &mut Rng, kib: usize) -> String {
    let bytes: Vec<u8> = (0..kib * 768).map(|_| rng.next() as u8).collect();
    STANDARD.encode(bytes)
}

fn knob(v: &Value, p: &str) -> u64 {
    v.pointer(p).and_then(Value::as_u64).unwrap_or(0)
}

fn text(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The fleet chart's templates: `fleet.deployments` Deployments (two containers, env,
/// resources, probes), a Service each, a ConfigMap of `fleet.configKiB` KiB of text and one
/// of `fleet.blobKiB` KiB of noise.
fn render_fleet(v: &Value) -> String {
    let mut rng = Rng(knob(v, "/fleet/seed") | 1);
    let image = format!("{}:{}", text(v, "/image/repository"), text(v, "/image/tag"));
    let sidecar = format!(
        "{}:{}",
        text(v, "/sidecar/repository"),
        text(v, "/sidecar/tag")
    );
    let mut out = String::new();
    for d in 0..knob(v, "/fleet/deployments").max(1) {
        let env: String = (0..12)
            .map(|e| {
                format!(
                    "            - name: {}_{e}\n              value: \"{}\"\n",
                    WORDS[rng.below(WORDS.len() as u64) as usize].to_uppercase(),
                    rng.below(1_000_000)
                )
            })
            .collect();
        out.push_str(&format!(
            r#"---
# Source: fleet/templates/service-{d}.yaml
apiVersion: v1
kind: Service
metadata:
  name: app-{d}
  labels:
    app.kubernetes.io/name: app-{d}
    app.kubernetes.io/managed-by: Helm
spec:
  ports:
    - name: http
      port: 8080
      targetPort: http
  selector:
    app.kubernetes.io/name: app-{d}
---
# Source: fleet/templates/deployment-{d}.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{d}
  labels:
    app.kubernetes.io/name: app-{d}
    app.kubernetes.io/managed-by: Helm
    helm.sh/chart: fleet-1.0.0
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: app-{d}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: app-{d}
      annotations:
        checksum/config: "{:016x}{:016x}"
    spec:
      serviceAccountName: app
      securityContext:
        runAsNonRoot: true
        fsGroup: 1001
      containers:
        - name: app
          image: {image}
          imagePullPolicy: IfNotPresent
          ports:
            - name: http
              containerPort: 8080
          env:
{env}          resources:
            requests:
              cpu: 100m
              memory: 128Mi
            limits:
              memory: 512Mi
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 10
          readinessProbe:
            httpGet:
              path: /ready
              port: http
          volumeMounts:
            - name: config
              mountPath: /etc/app
        - name: proxy
          image: {sidecar}
          args: ["--upstream=http://127.0.0.1:8080", "--metrics-port=9090"]
      volumes:
        - name: config
          configMap:
            name: app-config
"#,
            rng.next(),
            rng.next(),
        ));
    }
    let config_kib = knob(v, "/fleet/configKiB") as usize;
    let settings: String = prose(&mut rng, config_kib)
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    out.push_str(&format!(
        "---\n# Source: fleet/templates/configmap.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  settings.conf: |\n{settings}"
    ));
    let blob_kib = knob(v, "/fleet/blobKiB") as usize;
    if blob_kib > 0 {
        out.push_str(&format!(
            "---\n# Source: fleet/templates/dashboard.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dashboards\nbinaryData:\n  dashboard.json.gz: {}\n",
            blob(&mut rng, blob_kib)
        ));
    }
    out
}

/// One of a handful of charts: bulky default values (as real charts' values.yaml are),
/// identical for every release of the same chart and version.
fn fleet_chart(which: u64, version: u32) -> Chart {
    let mut rng = Rng(which * 7919 + 17);
    let mut defaults = serde_json::Map::new();
    for k in 0..120 {
        let a = WORDS[rng.below(WORDS.len() as u64) as usize];
        defaults.insert(
            format!("{a}{k}"),
            json!({"enabled": k % 3 == 0, "value": rng.below(10_000), "comment": WORDS[rng.below(WORDS.len() as u64) as usize]}),
        );
    }
    Chart {
        name: format!("fleet-{which}"),
        version: format!("1.{version}.0"),
        app_version: format!("2.{version}.0"),
        values: json!({
            "image": {"repository": format!("registry.example.com/team/app-{which}"), "tag": format!("2.{version}.0")},
            "sidecar": {"repository": "registry.example.com/platform/proxy", "tag": "1.4.2"},
            "fleet": {"deployments": 1, "configKiB": 1, "blobKiB": 0, "seed": 1},
            "settings": defaults,
        }),
        render: render_fleet,
    }
}

/// The size class of release `i`: (deployments, KiB of config text, KiB of noise).
fn shape(i: usize) -> (u64, u64, u64) {
    let mut rng = Rng(i as u64 * 2_654_435_761 + 1);
    if i % 1000 == 500 || i % 1000 == 999 {
        (4, 8, 700) // near the 1 MiB Secret limit
    } else if i % 20 == 10 {
        (30, 200, 0) // ~300 KiB manifest
    } else {
        (1 + rng.below(3), 2 + rng.below(12), 0)
    }
}

fn gzip_fast(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// The Secret Helm's driver writes for `r`, serialized.
fn secret_json(r: &ReleaseRecord) -> String {
    let helm = STANDARD.encode(gzip_fast(r.to_json().to_string().as_bytes()));
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": r.object_name(),
            "namespace": r.namespace,
            "resourceVersion": "1",
            "labels": {"name": r.name, "owner": "helm", "status": r.status.as_str(),
                       "version": r.revision.to_string(), "createdAt": "1795687200"},
        },
        "type": "helm.sh/release.v1",
        "data": {"release": STANDARD.encode(helm)},
    })
    .to_string()
}

fn release_secrets(i: usize, revs: usize) -> Vec<String> {
    let (deployments, config_kib, blob_kib) = shape(i);
    let which = (i % 7) as u64;
    let values = json!({
        "fleet": {"deployments": deployments, "configKiB": config_kib, "blobKiB": blob_kib, "seed": i + 1},
        "auth": {"password": format!("CANARY-{i}")},
    });
    let mut h = History::install(
        &format!("app-{i}"),
        &format!("team-{}", i / 3),
        &fleet_chart(which, 0),
        values,
    );
    for r in 1..revs {
        h.begin_upgrade(
            &fleet_chart(which, r as u32),
            json!({}),
            UpgradeValues::Default,
        );
        h.complete();
    }
    h.revisions.iter().map(secret_json).collect()
}

// ---------------------------------------------------------------------------------------
// The API server stand-in (child process).

#[derive(Clone)]
struct Stand {
    secrets: Arc<Vec<String>>,
    watchers: Arc<Mutex<Vec<futures::channel::mpsc::UnboundedSender<String>>>>,
    rv: Arc<std::sync::atomic::AtomicU64>,
    /// An expiry asked for while no watch was open: the next watch gets it.
    expire_next: Arc<AtomicBool>,
}

async fn list_or_watch(
    State(s): State<Stand>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let rv = s.rv.load(Ordering::SeqCst).to_string();
    if q.get("watch").map(String::as_str) == Some("true") {
        let (tx, rx) = futures::channel::mpsc::unbounded::<String>();
        let _ = tx.unbounded_send(
            json!({"type": "BOOKMARK", "object": {"kind": "Secret", "apiVersion": "v1",
                "metadata": {"resourceVersion": rv}}})
            .to_string(),
        );
        if s.expire_next.swap(false, Ordering::SeqCst) {
            let _ = tx.unbounded_send(gone());
        } else {
            s.watchers.lock().expect("lock").push(tx);
        }
        let lines = rx.map(|e| Ok::<_, std::convert::Infallible>(Bytes::from(format!("{e}\n"))));
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(lines))
            .unwrap_or_default();
    }
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(500);
    let from: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let to = (from + limit).min(s.secrets.len());
    let mut body = String::with_capacity(1 << 20);
    body.push_str(r#"{"apiVersion":"v1","kind":"SecretList","metadata":{"resourceVersion":""#);
    body.push_str(&rv);
    if to < s.secrets.len() {
        body.push_str(&format!(r#"","continue":"{to}"#));
    }
    body.push_str(r#""},"items":["#);
    for (n, item) in s.secrets[from.min(to)..to].iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}");
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn gone() -> String {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
        "metadata": {}, "status": "Failure", "message": "too old resource version",
        "reason": "Expired", "code": 410}})
    .to_string()
}

async fn expire(State(s): State<Stand>) -> Response {
    s.rv.fetch_add(1, Ordering::SeqCst);
    let mut w = s.watchers.lock().expect("lock");
    if w.is_empty() {
        s.expire_next.store(true, Ordering::SeqCst);
    }
    for tx in w.drain(..) {
        let _ = tx.unbounded_send(gone());
    }
    "expired".into_response()
}

fn serve(n: usize, revs: usize) {
    let t = Instant::now();
    // Two generator threads: the machine has two cores, and nothing is measured yet.
    let halves: Vec<Vec<String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|k| {
                sc.spawn(move || {
                    (0..n)
                        .filter(|i| i % 2 == k)
                        .flat_map(|i| release_secrets(i, revs))
                        .collect::<Vec<String>>()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("generator"))
            .collect()
    });
    let secrets: Vec<String> = halves.into_iter().flatten().collect();
    let mut sizes: Vec<usize> = secrets.iter().map(String::len).collect();
    sizes.sort_unstable();
    let pct = |p: usize| sizes.get(sizes.len() * p / 100).copied().unwrap_or(0) / 1024;
    eprintln!(
        "stand-in: {} Secrets ({:.0} MiB as JSON) generated in {:.1?}; Secret size median {} KiB, p95 {} KiB, p99 {} KiB, max {} KiB",
        secrets.len(),
        sizes.iter().sum::<usize>() as f64 / f64::from(1 << 20),
        t.elapsed(),
        pct(50),
        pct(95),
        pct(99),
        sizes.last().copied().unwrap_or(0) / 1024,
    );
    let stand = Stand {
        secrets: Arc::new(secrets),
        watchers: Arc::default(),
        rv: Arc::new(1.into()),
        expire_next: Arc::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let app = Router::new()
            .route("/api/v1/secrets", get(list_or_watch))
            .route("/expire", post(expire))
            .with_state(stand);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        let _ = axum::serve(listener, app).await;
    });
}

// ---------------------------------------------------------------------------------------
// The per-record probe: `fleet probe N REVS` parses and decodes the records of N releases as
// a list does (`watch::decode_listed`) on one thread and prints the mean cost per record by
// the status its labels carry (where a cold start's time goes, without the list around it).

fn probe(n: usize, revs: usize) {
    let mut by_status: std::collections::BTreeMap<String, (usize, Duration)> = Default::default();
    for i in 0..n {
        for text in release_secrets(i, revs) {
            let t = Instant::now();
            let obj: watch::SecretRecord = serde_json::from_str(&text).expect("a Secret");
            let record = watch::decode_listed(&obj, DecodeLimits::default());
            let spent = t.elapsed();
            let status = obj
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("status").cloned())
                .unwrap_or_default();
            assert!(matches!(record, watch::Record::Revision(..)), "{record:?}");
            let e = by_status.entry(status).or_default();
            e.0 += 1;
            e.1 += spent;
        }
    }
    for (status, (count, spent)) in by_status {
        println!(
            "{status:>12}: {count:>6} records, {:>8.1} µs per record",
            spent.as_secs_f64() * 1e6 / count.max(1) as f64
        );
    }
}

// ---------------------------------------------------------------------------------------
// The measured process.

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// CPU seconds this process has used (user + system, every thread), from `/proc/self/stat`:
/// with the wall time it says whether a phase was CPU-bound or waiting.
fn cpu_seconds() -> f64 {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start at ") ".
            let rest = s.rsplit_once(") ")?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // USER_HZ is 100 on every Linux this runs on.
    ticks as f64 / 100.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Resets `VmHWM` to the current RSS (Linux: `clear_refs` 5), so a later peak is the relist's.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The binary's allocator, so that what is measured is what runs.
#[global_allocator]
static ALLOCATOR: helm_guard::allocator::Allocator = helm_guard::allocator::Allocator;

fn main() {
    helm_guard::tls::install_provider();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("probe") {
        let n = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(500);
        let revs = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10);
        probe(n, revs);
        return;
    }
    if args.get(1).map(String::as_str) == Some("serve") {
        let n = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
        let revs = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
        serve(n, revs);
        return;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let revs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);

    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["serve", &n.to_string(), &revs.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("stand-in");
    let mut addr = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut addr)
        .expect("stand-in address");
    let url = format!("http://{}", addr.trim());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let client =
        kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    let index: SharedIndex = Arc::new(RwLock::new(Index::default()));
    let ready = Arc::new(AtomicBool::new(false));
    let feed = Feed::new(
        index.clone(),
        DecodeLimits::default(),
        Metrics::unregistered().store,
        ready.clone(),
    );
    let source = feed.add_source(RecordKind::Secret, None);
    let base = status_kib("VmRSS:");
    reset_peak();
    let cpu = cpu_seconds();
    let t = Instant::now();
    rt.spawn(watch::drive(
        feed.clone(),
        source,
        watch::watch_stream::<watch::SecretRecord>(client, None),
    ));
    while !ready.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let ready_in = t.elapsed();
    let (rss, peak) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    let releases = index.read().map_or(0, |i| i.len());
    println!(
        "initial sync: {n} releases x {revs} revisions ready in {ready_in:.2?} ({:.1} s of CPU); index holds {releases} releases",
        cpu_seconds() - cpu
    );
    println!(
        "  RSS before {:.1} MiB, after sync {:.1} MiB, peak {:.1} MiB; {} bytes per release (RSS growth / releases); target {:.1} MiB",
        mib(base),
        mib(rss),
        mib(peak),
        (rss.saturating_sub(base) * 1024) / n.max(1) as u64,
        64.0 + 4.0 * n as f64 / 1024.0
    );

    // One forced relist: every watch ends with 410, kube's watcher lists again.
    reset_peak();
    let cpu = cpu_seconds();
    let t = Instant::now();
    // The relist marks the watch stale, then fresh again once applied. The expiry is asked
    // again until it lands (the watch may be between connections).
    let expire = || {
        std::net::TcpStream::connect(addr.trim())
            .and_then(|mut s| {
                s.write_all(b"POST /expire HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            })
            .expect("expire");
    };
    let mut asked = Instant::now();
    expire();
    while !feed.is_stale() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
        if asked.elapsed() > Duration::from_secs(1) {
            expire();
            asked = Instant::now();
        }
    }
    while feed.is_stale() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (rss2, peak2) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    println!(
        "forced relist: applied in {:.2?} ({:.1} s of CPU); RSS after {:.1} MiB, peak during {:.1} MiB (+{:.1} MiB over the synced index)",
        t.elapsed(),
        cpu_seconds() - cpu,
        mib(rss2),
        mib(peak2),
        mib(peak2.saturating_sub(rss))
    );
    let _ = child.kill();
    let _ = child.wait();
}
