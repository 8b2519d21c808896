//! Driving a server: one keep-alive `WebhookClient` per concurrent sender (one connection
//! each, `TCP_NODELAY`, as the API server keeps its webhook connections), either closed-loop
//! (the next request as soon as an answer comes) or paced to a rate (the soak), with
//! latencies and verdicts tallied.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use helm_guard::demo::client::WebhookClient;
use tokio::sync::Semaphore;

/// One prepared request: where it goes, its body, and the verdict it must get.
pub struct Work {
    pub path: &'static str,
    pub body: Vec<u8>,
    pub allowed: bool,
}

/// `n` connected clients of the server at `base` (TLS handshakes done here, outside any
/// measurement).
pub async fn connect(
    ca_pem: &[u8],
    base: &str,
    n: usize,
) -> anyhow::Result<Vec<Arc<WebhookClient>>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let c = WebhookClient::new(ca_pem, base)?;
        let (status, _) = c.get("/healthz").await?;
        if !status.is_success() {
            bail!("healthz answered {status}");
        }
        clients.push(Arc::new(c));
    }
    Ok(clients)
}

/// Latencies in log-spaced buckets (2% apart, 1 µs to ~10 min): constant memory, so that a
/// long soak measures the server's memory and not a growing list of latencies here.
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
}

const BUCKETS: usize = 1_400;
const STEP: f64 = 1.02;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            n: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        let i = if us <= 1.0 {
            0
        } else {
            ((us.ln() / STEP.ln()).ceil() as usize).min(BUCKETS - 1)
        };
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.n += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
    }

    pub fn len(&self) -> u64 {
        self.n
    }

    /// The `q` quantile in milliseconds: the upper bound of its bucket (nearest rank).
    pub fn ms(&self, q: f64) -> f64 {
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n.max(1));
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return STEP.powi(i as i32) / 1e3;
            }
        }
        0.0
    }
}

#[derive(Default)]
pub struct Tally {
    pub latency: Histogram,
    pub elapsed: Duration,
    pub errors: usize,
    pub wrong_verdicts: usize,
    pub first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, t: Tally) {
        self.latency.merge(&t.latency);
        self.errors += t.errors;
        self.wrong_verdicts += t.wrong_verdicts;
        if self.first_error.is_none() {
            self.first_error = t.first_error;
        }
    }

    pub fn requests(&self) -> u64 {
        self.latency.len()
    }

    pub fn throughput(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile in milliseconds (within 2%).
    pub fn ms(&self, q: f64) -> f64 {
        self.latency.ms(q)
    }

    pub fn problems(&self) -> String {
        format!(
            "errors {} wrong verdicts {}{}",
            self.errors,
            self.wrong_verdicts,
            self.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        )
    }
}

/// Adds permits at `rate` per second until `until`, keeping at most `cap` in reserve (a
/// server that cannot keep up sees the rate it can take, not an ever-growing backlog), then
/// closes the semaphore so that the senders stop.
pub async fn pace(permits: Arc<Semaphore>, rate: u32, until: Instant, cap: usize) {
    let started = Instant::now();
    let mut issued = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        let add = usize::try_from(due.saturating_sub(issued)).unwrap_or(usize::MAX);
        issued = due;
        let room = cap.saturating_sub(permits.available_permits());
        permits.add_permits(add.min(room));
    }
    permits.close();
}

/// Sends `work` round-robin from every client until `deadline`, or, when `permits` is
/// given, one request per permit until it is closed.
pub async fn drive(
    clients: &[Arc<WebhookClient>],
    work: Arc<Vec<Work>>,
    deadline: Instant,
    permits: Option<Arc<Semaphore>>,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let (client, next, work, permits) =
                (client.clone(), next.clone(), work.clone(), permits.clone());
            tokio::spawn(async move {
                let mut t = Tally::default();
                while Instant::now() < deadline {
                    if let Some(p) = &permits {
                        match p.acquire().await {
                            Ok(permit) => permit.forget(),
                            Err(_) => break, // closed: the paced run is over
                        }
                    }
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(w) = work.get(k % work.len().max(1)) else {
                        break;
                    };
                    let sent = Instant::now();
                    let r = client.post_json(w.path, w.body.clone()).await;
                    t.latency.record(sent.elapsed());
                    let problem = match r {
                        Ok((status, body)) if status.is_success() => {
                            let want: &[u8] = if w.allowed {
                                b"\"allowed\":true"
                            } else {
                                b"\"allowed\":false"
                            };
                            if !body.windows(want.len()).any(|b| b == want) {
                                t.wrong_verdicts += 1;
                            }
                            None
                        }
                        Ok((status, _)) => Some(format!("HTTP {status}")),
                        Err(e) => Some(e.to_string()),
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
            Ok(t) => all.merge(t),
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert(format!("client task: {e}"));
            }
        }
    }
    all.elapsed = started.elapsed();
    all
}

/// CPU seconds (user + system) used so far by this process's live threads whose name
/// starts with `prefix` (Linux `/proc`; `None` elsewhere).
pub fn thread_cpu(prefix: &str) -> Option<f64> {
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
        if !stat
            .get(open + 1..close)
            .is_some_and(|n| n.starts_with(prefix))
        {
            continue;
        }
        // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        total += utime + stime;
    }
    Some(total as f64 / ticks)
}
