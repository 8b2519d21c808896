//! A bounded load test of helm-guard's real HTTPS webhook server, in-process on loopback,
//! measured against the floor of its own stack.
//!
//! ```sh
//! cargo run --release --example load -- [--concurrency 16] [--seconds 8] [--rounds 3]
//!                                        [--releases 1000] [--no-logs]
//! cargo run --release --example load -- --soak 120 --rate 400 [--concurrency 32]
//!                                        [--warmup 20] [--sample-every 5] [--idle 10]
//! cargo run --release --example load -- --write DIR [--releases 1000]
//! ```
//!
//! `--churn N` adds, after the comparison, churn runs: helm-guard alone on the ~4 KiB
//! drift review, `--rounds` times a quiet run and then a run during which N `helm upgrade`s
//! (3 N release Secret writes: pending, superseded, deployed; other releases each round)
//! arrive at once through the production watch path (`watch::drive` over an event stream,
//! decode pool, the shared index). It prints, per round and as medians, when every upgrade
//! was indexed (counted from the first write) and p50/p99 quiet and under churn. Rounds
//! alternate because a single quiet run's p99 moves by more than churn does.
//!
//! `--write DIR` writes the two compare reviews (`review-4k.json`, `review-32k.json`) and the
//! fleet's release Secrets (`releases.json`, a List) and exits: the inputs of
//! `../shared/bench/compare.sh`, which runs the built binary against the floor under `wrk`.
//!
//! Both modes index `--releases` Helm releases (every record decoded by the real path) and
//! serve them with `server::start` as shipped, on 127.0.0.1:0 with an in-memory certificate;
//! the server logs as in production (JSON, info level) into a sink unless `--no-logs`.
//! Server and client get a runtime each, so that thread names tell their CPU time apart. The
//! servers run as `serve` runs them (`--serving-threads`, default 1: one event-loop thread,
//! `srv`); the client has two workers, like the machine's cores (`--client-threads N`).
//!
//! **Compare** (default): the floor (a no-op webhook on the same stack, see `servers.rs`)
//! and helm-guard run side by side in this process, driven by the same client
//! (`--concurrency` keep-alive `WebhookClient`s, closed-loop). For a ~4 KiB and a ~32 KiB
//! Deployment-drift review to `/validate/enforce`, it alternates floor and guard
//! `--rounds` times for `--seconds` each, and prints every run, the medians, and the ratios
//! guard/floor of throughput, p50 and p99, with server CPU per request.
//!
//! **Soak** (`--soak SECONDS --rate N`): helm-guard alone at N requests/s from
//! `--concurrency` senders, a mix of workload kinds, drift and no drift, validate and
//! mutate, with ~85-character image references; the process's RSS and thread count are
//! sampled every `--sample-every` seconds, and it reports RSS at start, after `--warmup`
//! seconds, the maximum, at the end of the load and after `--idle` seconds of idle
//! (connections kept open, as the API server keeps them). The server runtime keeps tokio's
//! default blocking-pool keep-alive (10 s), as production does, and the binary's allocator
//! (jemalloc, src/allocator.rs; `_RJEM_MALLOC_CONF` in the environment changes its settings).
//! Latencies go into a fixed-size histogram (2% buckets), so the load generator's own memory
//! stays flat.

mod client;
mod reviews;
mod rss;
mod servers;
#[path = "../../benches/support/mod.rs"]
mod support;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum_server::tls_rustls::RustlsConfig;
use helm_guard::policy::{Mode, Settings};
use helm_guard::server::{self, AppState};
use helm_guard::store::SharedIndex;
use helm_guard::tls;
use tokio::sync::Semaphore;

use client::{Tally, Work};

struct Args {
    concurrency: usize,
    seconds: u64,
    rounds: usize,
    releases: usize,
    logs: bool,
    soak: Option<u64>,
    rate: u32,
    warmup: u64,
    sample_every: u64,
    idle: u64,
    write: Option<std::path::PathBuf>,
    churn: usize,
    serving_threads: usize,
    client_threads: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        concurrency: 16,
        seconds: 8,
        rounds: 3,
        releases: 1_000,
        logs: true,
        soak: None,
        rate: 400,
        warmup: 20,
        sample_every: 5,
        idle: 10,
        write: None,
        churn: 0,
        serving_threads: 1,
        client_threads: 2,
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
            "-t" | "--seconds" => a.seconds = value("--seconds")?,
            "--rounds" => a.rounds = value("--rounds")? as usize,
            "--releases" => a.releases = value("--releases")? as usize,
            "--no-logs" => a.logs = false,
            "--soak" => a.soak = Some(value("--soak")?),
            "--rate" => a.rate = u32::try_from(value("--rate")?).unwrap_or(u32::MAX),
            "--warmup" => a.warmup = value("--warmup")?,
            "--sample-every" => a.sample_every = value("--sample-every")?,
            "--idle" => a.idle = value("--idle")?,
            "--churn" => a.churn = value("--churn")? as usize,
            "--serving-threads" => a.serving_threads = value("--serving-threads")? as usize,
            "--client-threads" => a.client_threads = value("--client-threads")? as usize,
            "--write" => a.write = Some(it.next().context("--write needs a directory")?.into()),
            "-h" | "--help" => {
                println!(
                    "load [--concurrency N] [--seconds S] [--rounds N] [--releases N] [--no-logs] \
                     [--serving-threads N] [--client-threads N] [--churn N]\n\
                     load --soak SECONDS --rate N [--concurrency N] [--warmup S] \
                     [--sample-every S] [--idle S] [--releases N] [--no-logs]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if a.concurrency == 0 || a.releases == 0 || a.rounds == 0 || a.rate == 0 {
        bail!("--concurrency, --releases, --rounds and --rate must be positive");
    }
    // Hard bounds: loopback only, and every run stops by itself.
    a.concurrency = a.concurrency.min(1_024);
    a.seconds = a.seconds.clamp(1, 600);
    a.rounds = a.rounds.min(20);
    a.rate = a.rate.min(50_000);
    a.soak = a.soak.map(|s| s.clamp(1, 3_600));
    a.warmup = a.warmup.min(a.soak.unwrap_or(0));
    a.sample_every = a.sample_every.clamp(1, 60);
    a.idle = a.idle.min(600);
    a.serving_threads = a.serving_threads.clamp(1, 64);
    a.client_threads = a.client_threads.clamp(1, 64);
    Ok(a)
}

/// The servers' runtime, shaped as `serve` shapes its own (`--serving-threads`): by default
/// one event-loop thread, a current-thread runtime driven by a thread of its own named `srv`
/// (its blocking pool is named so too, so `srv` CPU time is all the server's); with N > 1,
/// N workers. `block_on` from the main thread waits for the future while `srv` drives the
/// tasks. The `--churn` watch feed runs on a `cluster` runtime, as in `serve`.
struct Serving {
    rt: Arc<tokio::runtime::Runtime>,
    driver: Option<(
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

impl Serving {
    fn start(args: &Args) -> anyhow::Result<Self> {
        let mut b = if args.serving_threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(args.serving_threads);
            b
        };
        b.thread_name("srv").enable_all();
        if args.soak.is_none() {
            // Blocking threads must outlive the runs for their CPU time to be counted.
            b.thread_keep_alive(Duration::from_secs(600));
        }
        let rt = Arc::new(b.build()?);
        let driver = (args.serving_threads <= 1)
            .then(|| {
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let driving = rt.clone();
                std::thread::Builder::new()
                    .name("srv".into())
                    .spawn(move || {
                        let _ = driving.block_on(stopped);
                    })
                    .map(|t| (stop, t))
            })
            .transpose()?;
        Ok(Self { rt, driver })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn stop(mut self) {
        if let Some((stop, thread)) = self.driver.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

/// The guard's state over the fleet's index, with `serve`'s direct request lines when it logs.
fn guard_state(index: SharedIndex, request_log: Option<Arc<dyn server::RequestLog>>) -> AppState {
    AppState::with_extras(
        index,
        Settings::new(Mode::Enforce),
        server::ServeLimits::default(),
        Arc::new(AtomicBool::new(true)),
        server::Extras {
            request_log,
            ..server::Extras::default()
        },
    )
}

/// The allocator settings in force, for the record (the binary's: jemalloc).
fn allocator() -> String {
    let (arenas, background) = helm_guard::allocator::settings();
    format!("jemalloc, arenas {arenas:?}, background thread {background:?}")
}

/// The binary's allocator, so that what is measured is what runs.
#[global_allocator]
static ALLOCATOR: helm_guard::allocator::Allocator = helm_guard::allocator::Allocator;

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if let Some(dir) = &args.write {
        return write_inputs(dir, args.releases);
    }
    tls::install_provider();
    // Production's logging (`serve --log-format json`, info) into a sink: the same line
    // formatter, writer thread and direct request lines, so the guard pays what it pays.
    let (_flush, request_log) = if args.logs {
        let (flush, direct) = helm_guard::cli::production_json_logs(std::io::sink(), "info")?;
        (Some(flush), direct)
    } else {
        (None, None)
    };
    let t0 = Instant::now();
    let start = rss::sample(t0);
    let mut fleet = support::fleet::fleet(args.releases);
    let index = std::mem::take(&mut fleet.index);
    println!(
        "setup: {} releases ({} records) indexed in {:.1?}; allocator: {}",
        args.releases,
        fleet.records,
        t0.elapsed(),
        allocator()
    );

    let bundle = tls::generate(&["127.0.0.1".to_owned()], 1)?;
    let config = RustlsConfig::from_config(Arc::new(tls::server_config(
        bundle.cert_pem.as_bytes(),
        bundle.key_pem.as_bytes(),
    )?));
    let server_rt = Serving::start(&args)?;
    let cluster_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("cluster")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("cli")
        .enable_all()
        .build()?;
    let ca = bundle.ca_pem.as_bytes();

    let shared: SharedIndex = Arc::new(RwLock::new(index));
    let guard = server_rt.block_on(server::start(
        guard_state(shared.clone(), request_log),
        config.clone(),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        None,
    ))?;
    let guard_base = format!("https://127.0.0.1:{}", guard.addr.port());
    let outcome = match args.soak {
        Some(seconds) => soak(
            &args,
            seconds,
            &fleet,
            &client_rt,
            ca,
            &guard_base,
            start,
            t0,
        ),
        None => {
            let (floor, addr) = server_rt.block_on(servers::Floor::start(config))?;
            let floor_base = format!("https://127.0.0.1:{}", addr.port());
            let r = compare(&args, &fleet, &client_rt, ca, &floor_base, &guard_base);
            server_rt.block_on(floor.shutdown(Duration::from_secs(2)))?;
            match r {
                Ok(clean) if args.churn > 0 => {
                    let churned = churn(
                        &args,
                        &fleet,
                        &client_rt,
                        &cluster_rt,
                        ca,
                        &guard_base,
                        &shared,
                    );
                    churned.map(|c| c && clean)
                }
                r => r,
            }
        }
    };
    let stopped = server_rt.block_on(guard.shutdown(Duration::from_secs(2)));
    drop(client_rt);
    drop(cluster_rt);
    server_rt.stop();
    let clean = outcome?;
    stopped?;
    if !clean {
        std::process::exit(1);
    }
    Ok(())
}

/// One measured run against `base`: the tally and the server CPU seconds it took.
fn run(
    rt: &tokio::runtime::Runtime,
    clients: &[Arc<helm_guard::demo::client::WebhookClient>],
    work: &Arc<Vec<Work>>,
    seconds: f64,
) -> anyhow::Result<(Tally, Option<f64>)> {
    let cpu0 = client::thread_cpu("srv");
    let limit = Duration::from_secs_f64(seconds);
    let deadline = Instant::now() + limit;
    // The senders stop at the deadline; a request in flight then is bounded by the client's
    // own 10 s timeout. This is the backstop if anything still hangs.
    let tally = rt
        .block_on(async {
            let drive = client::drive(clients, work.clone(), deadline, None);
            tokio::time::timeout(limit + Duration::from_secs(15), drive).await
        })
        .context("load run did not stop by itself")?;
    let cpu = client::thread_cpu("srv").zip(cpu0).map(|(a, b)| a - b);
    Ok((tally, cpu))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Floor and guard alternated on the same reviews; returns whether every answer was right.
fn compare(
    args: &Args,
    fleet: &support::fleet::Fleet,
    rt: &tokio::runtime::Runtime,
    ca: &[u8],
    floor_base: &str,
    guard_base: &str,
) -> anyhow::Result<bool> {
    let floor = rt.block_on(client::connect(ca, floor_base, args.concurrency))?;
    let guard = rt.block_on(client::connect(ca, guard_base, args.concurrency))?;
    let mut clean = true;
    println!(
        "compare: concurrency {}, {} rounds of {} s each, /validate/enforce, Deployment drift",
        args.concurrency, args.rounds, args.seconds
    );
    for (label, target, rich) in [("4KiB", 4 << 10, false), ("32KiB", 32 << 10, true)] {
        let drift = reviews::drift(fleet, target, rich);
        let size = drift.body.len();
        // The floor allows everything; the guard must deny the drift.
        let for_guard = Arc::new(vec![drift]);
        let for_floor = Arc::new(vec![Work {
            allowed: true,
            ..reviews::drift(fleet, target, rich)
        }]);
        // Warm both up (connections, caches, the blocking pool) outside the measurement.
        run(rt, &floor, &for_floor, 1.0)?;
        run(rt, &guard, &for_guard, 1.0)?;
        let mut rows: Vec<(&str, Tally, Option<f64>)> = Vec::new();
        for _ in 0..args.rounds {
            for (who, clients, work) in
                [("floor", &floor, &for_floor), ("guard", &guard, &for_guard)]
            {
                let (t, cpu) = run(rt, clients, work, args.seconds as f64)?;
                let n = t.requests().max(1) as f64;
                println!(
                    "  {label} ({size} B) {who}: {:>7.0} req/s  p50 {:.3} ms  p99 {:.3} ms  server cpu {}  {}",
                    t.throughput(),
                    t.ms(0.50),
                    t.ms(0.99),
                    cpu.map_or("?".into(), |c| format!("{:.0} µs/req", c * 1e6 / n)),
                    t.problems()
                );
                clean &= t.errors == 0 && t.wrong_verdicts == 0;
                rows.push((who, t, cpu));
            }
        }
        let med = |who: &str, f: &dyn Fn(&Tally, Option<f64>) -> f64| {
            median(
                rows.iter()
                    .filter(|r| r.0 == who)
                    .map(|r| f(&r.1, r.2))
                    .collect(),
            )
        };
        let rps = |t: &Tally, _: Option<f64>| t.throughput();
        let p50 = |t: &Tally, _: Option<f64>| t.ms(0.50);
        let p99 = |t: &Tally, _: Option<f64>| t.ms(0.99);
        let cpu = |t: &Tally, c: Option<f64>| c.unwrap_or(0.0) * 1e6 / t.requests().max(1) as f64;
        let (fr, gr) = (med("floor", &rps), med("guard", &rps));
        let (f50, g50) = (med("floor", &p50), med("guard", &p50));
        let (f99, g99) = (med("floor", &p99), med("guard", &p99));
        let (fc, gc) = (med("floor", &cpu), med("guard", &cpu));
        println!(
            "{label} ({size} B) medians: floor {fr:.0} req/s p50 {f50:.3} ms p99 {f99:.3} ms ({fc:.0} µs cpu/req); \
             guard {gr:.0} req/s p50 {g50:.3} ms p99 {g99:.3} ms ({gc:.0} µs cpu/req)"
        );
        println!(
            "{label} ratios guard/floor: throughput {:.2}, p50 {:.2}, p99 {:.2}",
            gr / fr.max(1e-9),
            g50 / f50.max(1e-9),
            g99 / f99.max(1e-9)
        );
    }
    Ok(clean)
}

/// The paced soak with RSS sampling; returns whether every answer was right.
#[allow(clippy::too_many_arguments)]
fn soak(
    args: &Args,
    seconds: u64,
    fleet: &support::fleet::Fleet,
    rt: &tokio::runtime::Runtime,
    ca: &[u8],
    base: &str,
    start: Option<rss::Sample>,
    t0: Instant,
) -> anyhow::Result<bool> {
    let work = Arc::new(reviews::soak_mix(fleet));
    let mean = work.iter().map(|w| w.body.len()).sum::<usize>() / work.len().max(1);
    let clients = rt.block_on(client::connect(ca, base, args.concurrency))?;
    println!(
        "soak: {seconds} s at {} req/s from {} senders, {} distinct reviews (mean {mean} B)",
        args.rate,
        args.concurrency,
        work.len()
    );
    let ready = rss::sample(t0);
    let sampler = rss::Sampler::start(t0, Duration::from_secs(args.sample_every));
    let load_from = t0.elapsed();
    let limit = Duration::from_secs(seconds);
    let deadline = Instant::now() + limit;
    let permits = Arc::new(Semaphore::new(0));
    let tally = rt
        .block_on(async {
            let soak = async {
                let pacer = tokio::spawn(client::pace(
                    permits.clone(),
                    args.rate,
                    deadline,
                    args.concurrency,
                ));
                let t =
                    client::drive(&clients, work.clone(), deadline, Some(permits.clone())).await;
                let _ = pacer.await;
                t
            };
            tokio::time::timeout(limit + Duration::from_secs(15), soak).await
        })
        .context("soak did not stop by itself")?;
    let end = rss::sample(t0);
    std::thread::sleep(Duration::from_secs(args.idle));
    let idle = rss::sample(t0);
    let samples = sampler.stop();
    println!(
        "soak: {} requests in {:.1} s ({:.0} req/s), p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms, {}",
        tally.requests(),
        tally.elapsed.as_secs_f64(),
        tally.throughput(),
        tally.ms(0.50),
        tally.ms(0.99),
        tally.ms(0.999),
        tally.problems()
    );
    let warm = samples
        .iter()
        .find(|s| s.at >= load_from + Duration::from_secs(args.warmup))
        .copied();
    let max = samples
        .iter()
        .chain(end.iter())
        .max_by_key(|s| s.rss_kib)
        .copied();
    let threads = samples.iter().map(|s| s.threads).max().unwrap_or(0);
    let show =
        |s: Option<rss::Sample>| s.map_or("?".into(), |s| format!("{:.1}", rss::mib(s.rss_kib)));
    println!(
        "rss MiB: process start {}, load start {}, after {} s warm-up {}, max {}, end {}, after {} s idle {} (threads max {threads}, after idle {})",
        show(start),
        show(ready),
        args.warmup,
        show(warm),
        show(max),
        show(end),
        args.idle,
        show(idle),
        idle.map_or(0, |s| s.threads),
    );
    println!(
        "rss series MiB: {}",
        samples
            .iter()
            .map(|s| format!("{:.0}s={:.1}", s.at.as_secs_f64(), rss::mib(s.rss_kib)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(tally.errors == 0 && tally.wrong_verdicts == 0)
}

/// `--write DIR`: the compare reviews and the fleet's Secrets, for `compare.sh`.
fn write_inputs(dir: &std::path::Path, releases: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let fleet = support::fleet::fleet_with_secrets(releases);
    for (file, target, rich) in [
        ("review-4k.json", 4 << 10, false),
        ("review-32k.json", 32 << 10, true),
    ] {
        let work = reviews::drift(&fleet, target, rich);
        std::fs::write(dir.join(file), &work.body)?;
        println!("{file}: {} bytes", work.body.len());
    }
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": fleet.secrets});
    let bytes = serde_json::to_vec(&list)?;
    std::fs::write(dir.join("releases.json"), &bytes)?;
    println!(
        "releases.json: {} releases, {} records, {} MiB",
        releases,
        fleet.records,
        bytes.len() >> 20
    );
    Ok(())
}

/// `--churn N`: p50/p99 of the guard quiet and while N upgrades arrive through the watch path,
/// and the time until all of them are indexed; `--rounds` alternations, other releases each.
fn churn(
    args: &Args,
    fleet: &support::fleet::Fleet,
    rt: &tokio::runtime::Runtime,
    cluster_rt: &tokio::runtime::Runtime,
    ca: &[u8],
    base: &str,
    index: &SharedIndex,
) -> anyhow::Result<bool> {
    use futures::SinkExt as _;
    use helm_guard::helm::{DecodeLimits, RecordKind};
    use helm_guard::policy::Releases as _;
    use k8s_openapi::api::core::v1::Secret;
    use kube::core::DeserializeGuard;
    use kube::runtime::watcher::Event;

    let work = Arc::new(vec![reviews::drift(fleet, 4 << 10, false)]);
    let clients = rt.block_on(client::connect(ca, base, args.concurrency))?;
    let seconds = 4.0;
    run(rt, &clients, &work, 1.0)?;

    let feed = helm_guard::watch::Feed::new(
        index.clone(),
        DecodeLimits::default(),
        helm_guard::metrics::Metrics::unregistered().store,
        Arc::new(AtomicBool::new(true)),
    );
    let source = feed.add_source(RecordKind::Secret, None);
    let (mut tx, rx) = futures::channel::mpsc::channel(64);
    let driver = cluster_rt.spawn(helm_guard::watch::drive::<DeserializeGuard<Secret>, _>(
        feed, source, rx,
    ));
    let mut upgrades = support::fleet::upgrades(args.churn * args.rounds);
    let (mut rows, mut clean) = (Vec::new(), true);
    for round in 1..=args.rounds {
        let these: Vec<_> = upgrades.drain(..args.churn.min(upgrades.len())).collect();
        let writes: Vec<Secret> = these
            .iter()
            .flat_map(|u| u.writes.iter())
            .map(|w| serde_json::from_value(w.clone()))
            .collect::<Result<_, _>>()?;
        let count = writes.len();
        let (quiet, _) = run(rt, &clients, &work, seconds)?;
        let index = index.clone();
        // The writes arrive one second into the measured run, all at once.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            let start = Instant::now();
            for w in writes {
                let event = Ok(Event::Apply(DeserializeGuard(Ok(w))));
                if futures::executor::block_on(tx.send(event)).is_err() {
                    return (tx, None);
                }
            }
            let deadline = start + Duration::from_secs(30);
            // A cursor over the upgrades: an indexed revision stays indexed, so each poll
            // looks up only what it has not yet seen (the probe must not load the server).
            let mut next = 0;
            while Instant::now() < deadline {
                while these.get(next).is_some_and(|u| {
                    index.history(&u.release).iter().any(|r| {
                        r.revision == u.revision && r.status == helm_guard::helm::Status::Deployed
                    })
                }) {
                    next += 1;
                }
                if next == these.len() {
                    return (tx, Some(start.elapsed()));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (tx, None)
        });
        let (busy, _) = run(rt, &clients, &work, seconds)?;
        let (back, indexed) = sender
            .join()
            .map_err(|_| anyhow::anyhow!("the churn sender panicked"))?;
        tx = back;
        let rise = (busy.ms(0.99) / quiet.ms(0.99).max(1e-9) - 1.0) * 100.0;
        println!(
            "churn round {round}: {} upgrades ({count} record writes) indexed in {}; quiet p50 {:.3} ms \
             p99 {:.3} ms ({:.0} req/s); under churn p50 {:.3} ms p99 {:.3} ms ({:.0} req/s): p99 {rise:+.0}%",
            args.churn,
            indexed.map_or("more than 30 s".into(), |d| format!("{d:.2?}")),
            quiet.ms(0.50),
            quiet.ms(0.99),
            quiet.throughput(),
            busy.ms(0.50),
            busy.ms(0.99),
            busy.throughput(),
        );
        clean &= indexed.is_some() && quiet.errors == 0 && busy.errors == 0;
        rows.push((
            indexed.map_or(f64::INFINITY, |d| d.as_secs_f64()),
            quiet.ms(0.99),
            busy.ms(0.99),
            rise,
        ));
    }
    driver.abort();
    let median = |f: fn(&(f64, f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (quiet99, busy99) = (median(|r| r.1), median(|r| r.2));
    println!(
        "churn medians over {} rounds: indexed in {:.2} s; p99 quiet {quiet99:.3} ms, under churn \
         {busy99:.3} ms: p99 {:+.0}% (median of the rounds' rises {:+.0}%)",
        rows.len(),
        median(|r| r.0),
        (busy99 / quiet99.max(1e-9) - 1.0) * 100.0,
        median(|r| r.3),
    );
    Ok(clean)
}
