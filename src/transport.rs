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
//! watchdog per connection tells them apart from two facts: whether a request is in flight
//! (the service sees it) and whether bytes arrived since the last one ended ([`Watched`]).
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
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, Request, Response, StatusCode, Version, header};
use axum::response::IntoResponse;
use axum_server::tls_rustls::RustlsConfig;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::server::ServerError;

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
    // The watchdog in `serve` bounds the request head (see the module doc).
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

async fn connection(
    tcp: TcpStream,
    spec: Arc<Spec>,
    mut phase: watch::Receiver<Phase>,
    _permit: OwnedSemaphorePermit,
    _live: Live,
    pending: PendingEntry,
) {
    let evict = pending.evict.clone();
    let Some(config) = &spec.tls else {
        serve(tcp, false, &spec, phase, pending).await;
        return;
    };
    // Built per handshake from the shared configuration, so a reloaded certificate is used
    // by the next connection (src/reload.rs).
    let acceptor = TlsAcceptor::from(config.get_inner());
    let handshake = tokio::time::timeout(spec.settings.handshake_timeout, acceptor.accept(tcp));
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                debug!(listener = spec.name, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(listener = spec.name, "TLS handshake timed out");
                return;
            }
        },
        () = reached(&mut phase, Phase::Stopped) => return,
        () = evict.notified() => {
            debug!(listener = spec.name, "connection limit: handshaking connection closed");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    serve(tls, h2, &spec, phase, pending).await;
}

/// Serves one connection under its watchdog until it ends, times out, or the drain stops it.
async fn serve<I>(
    io: I,
    h2: bool,
    spec: &Spec,
    mut phase: watch::Receiver<Phase>,
    pending: PendingEntry,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = spec.settings;
    let evict = pending.evict.clone();
    let state = Arc::new(ConnState::new(h2, pending));
    let opened_draining = *phase.borrow() >= Phase::Draining;
    let service = {
        let router = spec.router.clone();
        let state = state.clone();
        let draining = spec.draining.clone();
        hyper::service::service_fn(move |req| {
            handle(router.clone(), state.clone(), draining.clone(), req)
        })
    };
    let io = TokioIo::new(Watched {
        inner: io,
        state: state.clone(),
    });
    let builder = if h2 { &spec.h2 } else { &spec.auto };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut goaway = false;
    // Set when an idle HTTP/2 connection was sent GOAWAY: it is dropped if still open then.
    let mut hard_stop: Option<Instant> = None;
    loop {
        // After an idle GOAWAY only the hard stop is left to wait for.
        let wake = hard_stop.or_else(|| state.deadline(&settings));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(error) = r {
                    debug!(listener = spec.name, %error, "connection ended with an error");
                }
                return;
            }
            r = phase.changed() => {
                if r.is_err() {
                    return;
                }
            }
            () = state.wake.notified() => {}
            () = evict.notified() => {
                if state.served.load(Ordering::Acquire) == 0
                    && state.in_flight.load(Ordering::Acquire) == 0
                {
                    debug!(listener = spec.name, "connection limit: connection without a request closed");
                    return;
                }
            }
            () = sleep_until(wake) => {
                let now = Instant::now();
                if hard_stop.is_some_and(|t| now >= t) {
                    return;
                }
                if state.deadline(&settings).is_some_and(|d| now >= d) {
                    if state.reading_head() {
                        debug!(listener = spec.name, "request head not received in time; closing");
                        return;
                    }
                    if !h2 {
                        // HTTP/1 with no request in flight: nothing to lose by closing.
                        debug!(listener = spec.name, "idle connection closed");
                        return;
                    }
                    if !goaway {
                        conn.as_mut().graceful_shutdown();
                        goaway = true;
                    }
                    hard_stop.get_or_insert(now + settings.header_timeout);
                }
            }
        }
        let now_phase = *phase.borrow();
        if now_phase == Phase::Stopped {
            return;
        }
        // HTTP/2 connections open before the drain get GOAWAY at once; one opened during the
        // drain first serves the request it was opened for.
        if now_phase >= Phase::Draining
            && h2
            && !goaway
            && (!opened_draining || state.served.load(Ordering::Acquire) > 0)
        {
            conn.as_mut().graceful_shutdown();
            goaway = true;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Marks a response after which the HTTP/1 connection must close: the request body was not
/// (fully) read, so the connection cannot carry another request. See [`BodyError`].
#[derive(Clone, Copy, Debug)]
pub struct CloseConnection;

async fn handle(
    mut router: Router,
    state: Arc<ConnState>,
    draining: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    use tower_service::Service;
    let h1 = req.version() <= Version::HTTP_11;
    let _request = state.begin();
    // A Router is always ready; polled anyway, as the Service contract asks.
    std::future::poll_fn(|cx| <Router as Service<Request<Incoming>>>::poll_ready(&mut router, cx))
        .await?;
    let mut res = router.call(req).await?;
    if h1
        && (draining.load(Ordering::Acquire) || res.extensions().get::<CloseConnection>().is_some())
    {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(res)
}

/// What the watchdog knows about one connection. Times are milliseconds since `base`.
struct ConnState {
    base: Instant,
    h2: bool,
    in_flight: AtomicUsize,
    /// When the first byte of the next request arrived, plus one (0: none yet).
    head_since: AtomicU64,
    /// When the last request ended (or the connection started).
    idle_since: AtomicU64,
    served: AtomicU64,
    /// Wakes the watchdog when a request starts or ends or a head starts arriving.
    wake: Notify,
    /// Left at the first request: from then on the connection is not evicted.
    pending: PendingEntry,
}

impl ConnState {
    fn new(h2: bool, pending: PendingEntry) -> Self {
        Self {
            base: Instant::now(),
            h2,
            in_flight: AtomicUsize::new(0),
            // HTTP/1: the first request head is due `header_timeout` after the handshake.
            head_since: AtomicU64::new(if h2 { 0 } else { 1 }),
            idle_since: AtomicU64::new(0),
            served: AtomicU64::new(0),
            wake: Notify::new(),
            pending,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn on_bytes(&self) {
        if self.h2 {
            return; // pings and window updates are not requests
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) == 0
        {
            self.head_since.store(self.now() + 1, Ordering::Release);
            self.wake.notify_one();
        }
    }

    fn reading_head(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.head_since.load(Ordering::Acquire) != 0
    }

    /// When the watchdog must act, if nothing changes: `None` while a request is in flight
    /// (the request deadline bounds it).
    fn deadline(&self, settings: &Settings) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head = self.head_since.load(Ordering::Acquire);
        if head != 0 {
            return Some(self.at(head - 1) + settings.header_timeout);
        }
        Some(self.at(self.idle_since.load(Ordering::Acquire)) + settings.idle_timeout)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.served.load(Ordering::Acquire) == 0 {
            self.pending.leave();
        }
        self.head_since.store(0, Ordering::Release);
        self.wake.notify_one();
        InFlight(self.clone())
    }
}

/// One request in flight on a connection.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        s.idle_since.store(s.now(), Ordering::Release);
        s.served.fetch_add(1, Ordering::AcqRel);
        s.in_flight.fetch_sub(1, Ordering::AcqRel);
        s.wake.notify_one();
    }
}

/// The connection's byte stream, reporting arriving bytes to its [`ConnState`].
struct Watched<I> {
    inner: I,
    state: Arc<ConnState>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.on_bytes();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Declared (Content-Length) or found larger than the limit.
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The body had not arrived when the request deadline passed.
    #[error("request body not received before the deadline")]
    Deadline,
    /// The client broke the body off (reset, malformed chunking).
    #[error("reading the request body: {0}")]
    Read(#[source] axum::BoxError),
}

impl IntoResponse for BodyError {
    /// 413 and 503 hand the outcome to the webhook's failure policy (server.rs's table); the
    /// connection closes after the answer, as the rest of the body is not read.
    fn into_response(self) -> axum::response::Response {
        let (status, text) = match self {
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
            Self::Deadline => (StatusCode::SERVICE_UNAVAILABLE, "deadline passed\n"),
            Self::Read(_) => (StatusCode::BAD_REQUEST, "body not readable\n"),
        };
        let mut res = (status, text).into_response();
        res.extensions_mut().insert(CloseConnection);
        res
    }
}

/// Reads a request body of at most `max_bytes` by `deadline_at`.
///
/// The declared length is checked before the body is touched: hyper sends `100 Continue` to
/// an `Expect: 100-continue` request only when the body is first polled, so an oversized
/// body is refused (413) without the client ever sending it.
pub async fn read_body(
    body: Body,
    max_bytes: usize,
    deadline_at: Instant,
) -> Result<Bytes, BodyError> {
    let limit = max_bytes;
    // Content-Length (HTTP/1 and HTTP/2) is the body's exact size hint.
    if body.size_hint().lower() > u64::try_from(max_bytes).unwrap_or(u64::MAX) {
        return Err(BodyError::TooLarge { limit });
    }
    let collect = http_body_util::Limited::new(body, max_bytes).collect();
    match tokio::time::timeout_at(deadline_at, collect).await {
        Err(_) => Err(BodyError::Deadline),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(BodyError::TooLarge { limit })
        }
        Ok(Err(error)) => Err(BodyError::Read(error)),
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
