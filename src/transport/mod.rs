//! The listeners: accept loops, TLS handshakes, per-connection timeouts, the connection
//! limit, and the zero-loss drain on shutdown. The routers (src/server.rs) know nothing of
//! sockets; this module knows nothing of admission.
//!
//! Every state in which a client can hold a connection without progress has a bound:
//!
//! | state                                            | bound                                   |
//! |--------------------------------------------------|-----------------------------------------|
//! | TCP accepted, TLS handshake not finished         | `handshake_timeout`, then closed        |
//! | HTTP/1 request head incomplete (first request included) | `header_timeout`, then closed    |
//! | request body incomplete                          | the request deadline ([`read_body`]): 503 |
//! | no request in flight (keep-alive)                | `idle_timeout`: closed (HTTP/2: GOAWAY) |
//! | connections open at once                         | `max_connections`: the oldest one that has sent no request yet gives way, else the rest wait in the listen backlog |
//!
//! hyper's own HTTP/1 `header_read_timeout` is not used: in hyper 1.x it is armed as soon as
//! the connection is ready for the next request head, so it also bounds the idle time
//! between requests and cannot tell a kept-alive connection from a stalled head. A small
//! watchdog per connection (src/transport/conn.rs) tells them apart from two facts: whether
//! a request is in flight (the service sees it) and whether bytes arrived since the last one
//! ended.
//!
//! Shutdown ([`Running::drain`]) follows kubernetes#127335: the API server keeps sending on
//! pooled connections to a terminating pod, so closing an idle HTTP/1.1 connection can lose a
//! request the client has already written. Instead: `/readyz` answers 503 at once; listeners
//! keep accepting for a grace period; every HTTP/1 response carries `Connection: close`, after
//! which the client opens a new connection and hyper closes the old one — nothing can be in
//! flight on it any more. HTTP/2 connections get GOAWAY (streams below it are still
//! served). After the grace period the listeners close; the process waits for the remaining
//! connections up to the drain limit and then drops them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::server::ServerError;

mod body;
mod conn;

pub use body::{BodyError, read_body};
pub use conn::CloseConnection;
use conn::connection;

/// HTTP/2 keep-alive pings find dead peers while streams are open (idle ones are closed by
/// the idle timeout).
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent HTTP/2 streams per connection; the API server multiplexes its webhook calls.
const H2_MAX_STREAMS: u32 = 128;
/// At most one "limit reached" / "accept failed" line per listener in this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Timeouts and limits of the listeners.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Longest TLS handshake.
    pub handshake_timeout: Duration,
    /// Longest time to receive an HTTP/1 request head, counted from its first byte (from the
    /// end of the handshake for the first request of a connection).
    pub header_timeout: Duration,
    /// Longest time a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Connections open at once on the webhook listener (handshakes included).
    pub max_connections: usize,
    /// Connections open at once on the admin listener.
    pub admin_max_connections: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            // Longer than the API server's idle-connection timeout (Go's 90 s), so that the
            // client, not the server, closes an idle connection: a server-side close races
            // with a POST the client is writing, and Go does not retry a POST.
            idle_timeout: Duration::from_secs(120),
            // Well under the usual 1024 open files, with room for the admin listener, the
            // Kubernetes client and the certificate files.
            max_connections: 512,
            admin_max_connections: 32,
        }
    }
}

/// Where the shutdown stands; every accept loop and connection watches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// SIGTERM received: still accepting, telling every client to go away.
    Draining,
    /// Grace period over: listeners closed, open connections finishing.
    Closing,
    /// Drain limit reached: every connection is dropped.
    Stopped,
}

/// State shared by the listeners, their connections and [`Running`].
struct Shared {
    phase: watch::Sender<Phase>,
    /// Read by `/readyz` and by the service (`Connection: close`).
    draining: Arc<AtomicBool>,
    /// Open connections, handshakes included.
    live: AtomicUsize,
    /// Woken when `live` drops to zero.
    gone: Notify,
}

impl Shared {
    async fn wait_drained(&self) {
        loop {
            let gone = self.gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            gone.await;
        }
    }
}

/// Counts one open connection for as long as it lives.
struct Live(Arc<Shared>);

impl Live {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.live.fetch_add(1, Ordering::AcqRel);
        Self(shared.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.gone.notify_waiters();
        }
    }
}

/// What a listener serves and how.
struct Spec {
    name: &'static str,
    tls: Option<RustlsConfig>,
    router: Router,
    limit: usize,
    settings: Settings,
    draining: Arc<AtomicBool>,
    /// Detects HTTP/1 or HTTP/2 from the first bytes (plain connections, TLS without ALPN).
    auto: auto::Builder<TokioExecutor>,
    /// For TLS connections that negotiated `h2` by ALPN.
    h2: auto::Builder<TokioExecutor>,
    pending: Arc<Pending>,
}

/// Serving listeners; [`Running::drain`] stops them.
pub struct Running {
    /// Where the TLS listener is bound (useful with port 0).
    pub addr: SocketAddr,
    /// Where the admin listener is bound, if any.
    pub admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    accepting: Vec<tokio::task::JoinHandle<()>>,
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Connections still open at the drain limit, dropped then (0: a clean drain).
    pub dropped: usize,
}

impl Running {
    /// First step of the shutdown: `/readyz` answers 503 and every response tells its client
    /// to go away (HTTP/1 `Connection: close`, HTTP/2 GOAWAY); the listeners keep accepting.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
        self.shared.phase.send_if_modified(|p| {
            let earlier = *p < Phase::Draining;
            if earlier {
                *p = Phase::Draining;
            }
            earlier
        });
    }

    /// Drains: [`Running::begin_drain`], keep accepting for `grace`, close the listeners,
    /// wait for the open connections; at `limit` after the call, drop whatever is left.
    pub async fn drain(self, grace: Duration, limit: Duration) -> Drained {
        let started = Instant::now();
        let limit_at = started + limit;
        self.begin_drain();
        tokio::time::sleep_until((started + grace).min(limit_at)).await;
        self.shared.phase.send_replace(Phase::Closing);
        for task in self.accepting {
            let _ = task.await;
        }
        let clean = tokio::time::timeout_at(limit_at, self.shared.wait_drained())
            .await
            .is_ok();
        let dropped = if clean {
            0
        } else {
            self.shared.live.load(Ordering::Acquire)
        };
        self.shared.phase.send_replace(Phase::Stopped);
        // The connection tasks see `Stopped` at once; wait briefly so their sockets are closed
        // when this returns (a safety net, not a requirement).
        let _ = tokio::time::timeout(Duration::from_secs(1), self.shared.wait_drained()).await;
        Drained { dropped }
    }

    /// Stops accepting at once and lets open connections finish for up to `drain`.
    pub async fn shutdown(self, drain: Duration) -> Result<(), ServerError> {
        self.drain(Duration::ZERO, drain).await;
        Ok(())
    }
}

/// Binds the TLS listener (and the plain admin listener) and serves them in background tasks.
/// `draining` is the flag `/readyz` reads.
pub async fn start(
    webhook: Router,
    tls: RustlsConfig,
    listen: SocketAddr,
    admin: Option<(Router, SocketAddr)>,
    settings: Settings,
    draining: Arc<AtomicBool>,
) -> Result<Running, ServerError> {
    let (phase, _) = watch::channel(Phase::Serving);
    let shared = Arc::new(Shared {
        phase,
        draining: draining.clone(),
        live: AtomicUsize::new(0),
        gone: Notify::new(),
    });
    let (auto, h2) = builders();
    let spec = |name, tls, router, limit| Spec {
        name,
        tls,
        router,
        limit,
        settings,
        draining: draining.clone(),
        auto: auto.clone(),
        h2: h2.clone(),
        pending: Arc::default(),
    };
    let bind = |addr: SocketAddr| async move {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Io { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServerError::Io { addr, source })?;
        Ok::<_, ServerError>((listener, bound))
    };
    let (listener, addr) = bind(listen).await?;
    let admin_bound = match admin {
        Some((router, a)) => Some((router, bind(a).await?)),
        None => None,
    };
    let mut accepting = vec![tokio::spawn(accept_loop(
        listener,
        Arc::new(spec(
            "webhook",
            Some(tls),
            webhook,
            settings.max_connections,
        )),
        shared.clone(),
    ))];
    let admin_addr = admin_bound.map(|(router, (listener, bound))| {
        accepting.push(tokio::spawn(accept_loop(
            listener,
            Arc::new(spec("admin", None, router, settings.admin_max_connections)),
            shared.clone(),
        )));
        bound
    });
    Ok(Running {
        addr,
        admin_addr,
        shared,
        accepting,
    })
}

fn builders() -> (auto::Builder<TokioExecutor>, auto::Builder<TokioExecutor>) {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // The watchdog in `conn::serve` bounds the request head (see the module doc).
    b.http1().keep_alive(true).header_read_timeout(None);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_concurrent_streams(H2_MAX_STREAMS);
    let h2 = b.clone().http2_only();
    (b, h2)
}

/// Resolves once the shutdown has reached `phase` (or the server is gone).
async fn reached(rx: &mut watch::Receiver<Phase>, phase: Phase) {
    let _ = rx.wait_for(|p| *p >= phase).await;
}

/// At most one log line per [`LOG_EVERY`]; counts the ones left out.
struct Throttle {
    last: Option<Instant>,
    skipped: u64,
}

impl Throttle {
    fn new() -> Self {
        Self {
            last: None,
            skipped: 0,
        }
    }

    /// `Some(skipped since the last line)` when a line may be written now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) < LOG_EVERY) {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

async fn accept_loop(listener: TcpListener, spec: Arc<Spec>, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(spec.limit));
    let mut phase = shared.phase.subscribe();
    let mut full = Throttle::new();
    let mut failing = Throttle::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = reached(&mut phase, Phase::Closing) => return,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(error) => {
                // Typically EMFILE/ENFILE: back off instead of spinning on the error.
                if let Some(skipped) = failing.ready() {
                    warn!(listener = spec.name, %error, times_since_last_line = skipped, "accept failed");
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {},
                    () = reached(&mut phase, Phase::Closing) => return,
                }
                continue;
            }
        };
        // TCP_NODELAY: admission reviews are small request/response pairs on kept-alive
        // connections, where Nagle's algorithm and delayed ACKs add ~40 ms to a response.
        let _ = tcp.set_nodelay(true);
        let Some(permit) = make_room(&permits, &spec, &mut phase, &mut full).await else {
            return;
        };
        let live = Live::new(&shared);
        let pending = spec.pending.add();
        tokio::spawn(connection(
            tcp,
            spec.clone(),
            phase.clone(),
            permit,
            live,
            pending,
        ));
    }
}

/// A slot for a connection just accepted. At the limit, the oldest connection that has not
/// sent a request yet gives way: a client that stalls before its first request cannot keep
/// out the ones that talk. With none to evict, waits for a slot while the next connections
/// wait in the listen backlog. `None` once the listeners close.
async fn make_room(
    permits: &Arc<Semaphore>,
    spec: &Spec,
    phase: &mut watch::Receiver<Phase>,
    full: &mut Throttle,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = permits.clone().try_acquire_owned() {
        return Some(p);
    }
    if let Some(skipped) = full.ready() {
        warn!(
            listener = spec.name,
            limit = spec.limit,
            times_since_last_line = skipped,
            "connection limit reached; closing the oldest connection that has sent no request \
             yet, or waiting for one to finish"
        );
    }
    loop {
        spec.pending.evict_oldest();
        tokio::select! {
            p = permits.clone().acquire_owned() => return p.ok(),
            // The evicted connection may have started a request meanwhile: try the next one.
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = reached(phase, Phase::Closing) => return None,
        }
    }
}

/// Connections that have not sent a request yet (handshaking, or waiting for their first
/// request head), oldest first.
#[derive(Default)]
struct Pending {
    next: AtomicU64,
    waiting: Mutex<BTreeMap<u64, Arc<Notify>>>,
}

impl Pending {
    fn add(self: &Arc<Self>) -> PendingEntry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        self.lock().insert(id, evict.clone());
        PendingEntry {
            pending: self.clone(),
            id,
            evict,
        }
    }

    fn evict_oldest(&self) {
        if let Some((_, evict)) = self.lock().pop_first() {
            evict.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One connection's place in [`Pending`], left at its first request or when it ends.
struct PendingEntry {
    pending: Arc<Pending>,
    id: u64,
    evict: Arc<Notify>,
}

impl PendingEntry {
    fn leave(&self) {
        self.pending.lock().remove(&self.id);
    }
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Logs the outcome of a drain.
pub fn log_drained(d: Drained) {
    if d.dropped == 0 {
        info!("drained: every connection closed");
    } else {
        warn!(
            dropped = d.dropped,
            "drain limit reached; open connections dropped"
        );
    }
}
