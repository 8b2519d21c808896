//! A bounded load test of the real HTTPS webhook server, on loopback only.
//!
//! ```sh
//! cargo run --release --example load -- [--concurrency 16] [--count 20000] [--seconds 30]
//!                                        [--releases 1000] [--no-logs] [--client-nodelay]
//!                                        [--server-nodelay]
//! ```
//!
//! Starts `server::start` on 127.0.0.1:0 with an in-memory certificate and an index of
//! `--releases` Helm releases (every record decoded by the real path), then drives it with
//! `--concurrency` keep-alive `WebhookClient`s (one connection each, as the API server keeps
//! its webhook connections) posting realistic AdmissionReviews: drift and no-drift edits,
//! to `/validate/enforce` and `/mutate/audit`. It stops after `--count` requests or
//! `--seconds`, whichever comes first, and prints throughput, latency percentiles, errors,
//! and the CPU time server and client threads used (they share the machine's cores).
//!
//! The server logs as in production (JSON, info level) into a sink, so formatting costs are
//! included; `--no-logs` turns logging off. `--client-nodelay` sends with a client like
//! `WebhookClient` but with `TCP_NODELAY` set on its sockets, as Go's HTTP client (the API
//! server's) always does: with it, only the server side's Nagle/delayed-ACK behaviour shows.
//! `--server-nodelay` serves the same `server::router` with `TCP_NODELAY` on accepted
//! sockets (axum-server's `NoDelayAcceptor` under the rustls acceptor), to measure that fix.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::body::Bytes;
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use helm_guard::demo::client::WebhookClient;
use helm_guard::policy::{Mode, Settings};
use helm_guard::server::{self, AppState};
use helm_guard::tls;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[path = "../benches/support/mod.rs"]
mod support;

use support::Change;

struct Args {
    concurrency: usize,
    count: usize,
    seconds: u64,
    releases: usize,
    logs: bool,
    client_nodelay: bool,
    server_nodelay: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        concurrency: 16,
        count: 20_000,
        seconds: 30,
        releases: 1_000,
        logs: true,
        client_nodelay: false,
        server_nodelay: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> anyhow::Result<u64> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            v.parse()
                .with_context(|| format!("{name}: not a number: {v}"))
        };
        match flag.as_str() {
            "-c" | "--concurrency" => a.concurrency = value("--concurrency")? as usize,
            "-n" | "--count" => a.count = value("--count")? as usize,
            "-t" | "--seconds" => a.seconds = value("--seconds")?,
            "--releases" => a.releases = value("--releases")? as usize,
            "--no-logs" => a.logs = false,
            "--client-nodelay" => a.client_nodelay = true,
            "--server-nodelay" => a.server_nodelay = true,
            "-h" | "--help" => {
                println!(
                    "load [--concurrency N] [--count N] [--seconds S] [--releases N] [--no-logs] \
                     [--client-nodelay] [--server-nodelay]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if a.concurrency == 0 || a.count == 0 || a.releases == 0 {
        bail!("--concurrency, --count and --releases must be positive");
    }
    // Hard bounds: this is a load test of loopback, not a soak test.
    a.concurrency = a.concurrency.min(1_024);
    a.seconds = a.seconds.clamp(1, 600);
    Ok(a)
}

/// One prepared request: where it goes, its body, and the verdict it must get.
struct Prepared {
    path: &'static str,
    body: Vec<u8>,
    allowed: bool,
}

fn prepare(fleet: &support::Fleet) -> Vec<Prepared> {
    (0..256)
        .map(|k| {
            // Spread over the fleet; alternate drift / no drift and validate / mutate.
            let i = (k * 37) % fleet.deployed.len();
            let change = if k % 2 == 0 {
                Change::Drift
            } else {
                Change::Unchanged
            };
            let validate = (k / 2) % 2 == 0;
            let edit = support::edit_for(fleet, i, change);
            let review = support::realistic_review(&edit, &format!("load-{k:04}"), k as u64);
            Prepared {
                path: if validate {
                    "/validate/enforce"
                } else {
                    "/mutate/audit"
                },
                body: serde_json::to_vec(&review).expect("serialises"),
                allowed: !(validate && change == Change::Drift),
            }
        })
        .collect()
}

/// A sender: the crate's `WebhookClient`, or the same stack with `TCP_NODELAY`.
enum Sender {
    Stock(WebhookClient),
    NoDelay {
        client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
        base: String,
    },
}

impl Sender {
    fn new(ca_pem: &[u8], base: &str, nodelay: bool) -> anyhow::Result<Self> {
        if !nodelay {
            return Ok(Self::Stock(WebhookClient::new(ca_pem, base)?));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls::client_config(ca_pem)?).clone())
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self::NoDelay {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base.to_owned(),
        })
    }

    async fn send(
        &self,
        get: bool,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), String> {
        match self {
            Self::Stock(c) if get => c.get(path).await.map_err(|e| e.to_string()),
            Self::Stock(c) => c.post_json(path, body).await.map_err(|e| e.to_string()),
            Self::NoDelay { client, base } => {
                let req = if get {
                    hyper::Request::get(format!("{base}{path}"))
                } else {
                    hyper::Request::post(format!("{base}{path}"))
                        .header("content-type", "application/json")
                }
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
                let fut = async {
                    let rsp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
                    let status = rsp.status();
                    let body = rsp
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?
                        .to_bytes();
                    Ok((status, body))
                };
                tokio::time::timeout(Duration::from_secs(10), fut)
                    .await
                    .map_err(|_| "timed out".to_owned())?
            }
        }
    }
}

/// The server under test: `server::start` as shipped, or its router with `TCP_NODELAY`.
enum Served {
    Shipped(server::Running),
    NoDelay {
        handle: Handle<SocketAddr>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    },
}

impl Served {
    async fn start(
        state: AppState,
        config: RustlsConfig,
        nodelay: bool,
    ) -> anyhow::Result<(Self, SocketAddr)> {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        if !nodelay {
            let running = server::start(state, config, listen, None).await?;
            let addr = running.addr;
            return Ok((Self::Shipped(running), addr));
        }
        let handle: Handle<SocketAddr> = Handle::new();
        let acceptor = RustlsAcceptor::new(config).acceptor(NoDelayAcceptor::new());
        let srv = axum_server::bind(listen)
            .acceptor(acceptor)
            .handle(handle.clone());
        let app = server::router(state);
        let task = tokio::spawn(async move { srv.serve(app.into_make_service()).await });
        let addr = handle.listening().await.context("listener did not start")?;
        Ok((Self::NoDelay { handle, task }, addr))
    }

    async fn shutdown(self, drain: Duration) -> anyhow::Result<()> {
        match self {
            Self::Shipped(running) => running.shutdown(drain).await?,
            Self::NoDelay { handle, task } => {
                handle.graceful_shutdown(Some(drain));
                task.await??;
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Tally {
    durations: Vec<Duration>,
    errors: usize,
    wrong_verdicts: usize,
    first_error: Option<String>,
}

async fn drive(
    clients: Vec<Sender>,
    work: Arc<Vec<Prepared>>,
    count: usize,
    deadline: Instant,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let next = next.clone();
            let work = work.clone();
            tokio::spawn(async move {
                let mut t = Tally::default();
                while Instant::now() < deadline {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= count {
                        break;
                    }
                    let p = &work[k % work.len()];
                    let started = Instant::now();
                    let r = client.send(false, p.path, p.body.clone()).await;
                    t.durations.push(started.elapsed());
                    let problem = match r {
                        Ok((status, body)) if status.is_success() => {
                            let want: &[u8] = if p.allowed {
                                b"\"allowed\":true"
                            } else {
                                b"\"allowed\":false"
                            };
                            if !body.windows(want.len()).any(|w| w == want) {
                                t.wrong_verdicts += 1;
                            }
                            None
                        }
                        Ok((status, _)) => Some(format!("HTTP {status}")),
                        Err(e) => Some(e),
                    };
                    if let Some(p) = problem {
                        t.errors += 1;
                        t.first_error.get_or_insert(p);
                    }
                }
                t
            })
        })
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => {
                all.durations.extend(t.durations);
                all.errors += t.errors;
                all.wrong_verdicts += t.wrong_verdicts;
                if all.first_error.is_none() {
                    all.first_error = t.first_error;
                }
            }
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert(format!("client task: {e}"));
            }
        }
    }
    all
}

/// CPU seconds (user + system) used so far by this process's live threads whose name
/// starts with `prefix` (Linux `/proc`; `None` elsewhere).
fn thread_cpu(prefix: &str) -> Option<f64> {
    let ticks = 100.0; // USER_HZ on every Linux platform in use
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue; // the thread exited meanwhile
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        total += utime + stime;
    }
    Some(total as f64 / ticks)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    tls::install_provider();
    if args.logs {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::sink)
            .try_init();
    }

    let started = Instant::now();
    let mut fleet = support::fleet(args.releases);
    let index = Arc::new(RwLock::new(std::mem::take(&mut fleet.index)));
    let work = Arc::new(prepare(&fleet));
    let mean_body = work.iter().map(|p| p.body.len()).sum::<usize>() / work.len();
    println!(
        "setup: {} releases ({} records) indexed, {} distinct reviews (mean body {mean_body} B) in {:.1?}",
        args.releases,
        fleet.records,
        work.len(),
        started.elapsed()
    );

    let bundle = tls::generate(&["127.0.0.1".to_owned()], 1)?;
    let config = RustlsConfig::from_config(Arc::new(tls::server_config(
        bundle.cert_pem.as_bytes(),
        bundle.key_pem.as_bytes(),
    )?));
    let state = AppState::new(
        index,
        Settings::new(Mode::Enforce),
        server::ServeLimits::default(),
        Arc::new(AtomicBool::new(true)),
    );
    // Server and client get a runtime each (two workers, like the machine's cores), so
    // that thread names tell their CPU time apart.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("srv")
        .thread_keep_alive(Duration::from_secs(600))
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cli")
        .enable_all()
        .build()?;
    let (running, addr) = server_rt.block_on(Served::start(state, config, args.server_nodelay))?;
    let base = format!("https://127.0.0.1:{}", addr.port());

    let limit = Duration::from_secs(args.seconds);
    let outcome = client_rt.block_on(async {
        // One client (one connection) per concurrent sender; connect them all first, so the
        // TLS handshakes are not part of the measurement.
        let mut clients = Vec::with_capacity(args.concurrency);
        for _ in 0..args.concurrency {
            let c = Sender::new(bundle.ca_pem.as_bytes(), &base, args.client_nodelay)?;
            let (status, _) = c
                .send(true, "/healthz", Vec::new())
                .await
                .map_err(anyhow::Error::msg)?;
            if !status.is_success() {
                bail!("healthz answered {status}");
            }
            clients.push(c);
        }
        let (srv0, cli0) = (thread_cpu("srv"), thread_cpu("cli"));
        let t0 = Instant::now();
        let deadline = t0 + limit;
        // The senders stop at the deadline; a request in flight then is bounded by the
        // client's own 10 s timeout. This is the backstop if anything still hangs.
        let tally = tokio::time::timeout(
            limit + Duration::from_secs(15),
            drive(clients, work.clone(), args.count, deadline),
        )
        .await
        .context("load test did not stop by itself")?;
        let elapsed = t0.elapsed();
        let cpu = |now: Option<f64>, before: Option<f64>| now.zip(before).map(|(a, b)| a - b);
        Ok((
            tally,
            elapsed,
            cpu(thread_cpu("srv"), srv0),
            cpu(thread_cpu("cli"), cli0),
        ))
    });
    let stopped = server_rt.block_on(running.shutdown(Duration::from_secs(2)));
    drop(client_rt);
    drop(server_rt);
    let (mut tally, elapsed, srv_cpu, cli_cpu) = outcome?;
    stopped?;

    tally.durations.sort_unstable();
    let n = tally.durations.len();
    let mean = tally.durations.iter().sum::<Duration>() / n.max(1) as u32;
    println!(
        "load: {n} requests, concurrency {}{}{}, {:.2} s{}",
        args.concurrency,
        if args.client_nodelay {
            ", client TCP_NODELAY"
        } else {
            ""
        },
        if args.server_nodelay {
            ", server TCP_NODELAY"
        } else {
            ""
        },
        elapsed.as_secs_f64(),
        if n < args.count {
            " (stopped by the time limit)"
        } else {
            ""
        }
    );
    println!(
        "throughput: {:.0} requests/s",
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency ms: mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(mean),
        ms(percentile(&tally.durations, 0.50)),
        ms(percentile(&tally.durations, 0.90)),
        ms(percentile(&tally.durations, 0.99)),
        ms(percentile(&tally.durations, 0.999)),
        ms(tally.durations.last().copied().unwrap_or_default()),
    );
    let stalls = tally
        .durations
        .iter()
        .filter(|d| **d >= Duration::from_millis(30))
        .count();
    println!(
        "requests ≥ 30 ms: {stalls} ({:.1}%)",
        100.0 * stalls as f64 / n.max(1) as f64
    );
    println!(
        "errors: {}  wrong verdicts: {}{}",
        tally.errors,
        tally.wrong_verdicts,
        tally
            .first_error
            .as_deref()
            .map(|e| format!("  (first: {e})"))
            .unwrap_or_default()
    );
    if let (Some(s), Some(c)) = (srv_cpu, cli_cpu) {
        println!(
            "cpu: server {s:.2} s ({:.0} µs/request), client {c:.2} s ({:.0} µs/request), \
             over {:.2} s wall on {} cores",
            s * 1e6 / n.max(1) as f64,
            c * 1e6 / n.max(1) as f64,
            elapsed.as_secs_f64(),
            std::thread::available_parallelism().map_or(0, |p| p.get()),
        );
    }
    if tally.errors > 0 || tally.wrong_verdicts > 0 {
        std::process::exit(1);
    }
    Ok(())
}
