//! One connection, from accept to close: the TLS handshake under its timeout, then serving
//! under a watchdog. The watchdog's facts live in [`ConnState`]: requests in flight (the
//! service marks them with [`InFlight`]) and when the next request head began to arrive
//! ([`Watched`] sees the bytes). From those it closes a stalled head or an idle connection,
//! and it sends HTTP/2 GOAWAY when the drain begins. [`CloseConnection`] is how a response
//! asks for the HTTP/1 connection to close after it.
//!
//! The request path only stores atomics; nothing wakes the watchdog per request. It looks
//! at the facts on its own, at the nearest deadline they give and at least every [`tick`]
//! (a quarter of the header timeout), so a deadline that moves earlier unseen — a head
//! starting on an idle connection — is still kept to within a tick's precision. Waking it on
//! every request start and end cost three timer re-arms and task polls per request.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, Version, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::{Live, PendingEntry, Phase, Settings, Spec, reached};

/// Handshakes (on a TLS listener) and serves one accepted connection. It holds its slot under
/// the connection limit and its count in the drain until it ends.
pub(super) async fn connection(
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
    let evict = pending.evict.clone();
    let state = Arc::new(ConnState::new(h2, pending));
    let mut dog = Watchdog::new(h2, spec.settings, *phase.borrow() >= Phase::Draining);
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
    loop {
        let wake = dog.wake_at(&state);
        let act = tokio::select! {
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
                Act::Wait
            }
            () = evict.notified() => {
                if state.served.load(Ordering::Acquire) == 0
                    && state.in_flight.load(Ordering::Acquire) == 0
                {
                    debug!(listener = spec.name, "connection limit: connection without a request closed");
                    return;
                }
                Act::Wait
            }
            () = tokio::time::sleep_until(wake) => dog.on_alarm(&state, spec.name),
        };
        // What woke the watchdog, then where the shutdown stands.
        for act in [act, dog.on_phase(*phase.borrow(), &state)] {
            match act {
                Act::Wait => {}
                Act::GoAway => conn.as_mut().graceful_shutdown(),
                Act::Close => return,
            }
        }
    }
}

/// What the watchdog does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Wait,
    /// HTTP/2: send GOAWAY; streams open below it are still served.
    GoAway,
    Close,
}

/// The watchdog's memory across its wake-ups; the facts it judges are in [`ConnState`].
struct Watchdog {
    h2: bool,
    settings: Settings,
    /// The connection was opened during the drain.
    opened_draining: bool,
    /// GOAWAY sent (HTTP/2); it is sent once.
    goaway: bool,
    /// Set when an idle HTTP/2 connection was sent GOAWAY: it is dropped if still open then.
    hard_stop: Option<Instant>,
}

impl Watchdog {
    fn new(h2: bool, settings: Settings, opened_draining: bool) -> Self {
        Self {
            h2,
            settings,
            opened_draining,
            goaway: false,
            hard_stop: None,
        }
    }

    /// When to look again if nothing changes. After an idle GOAWAY only the hard stop is left
    /// to wait for.
    fn wake_at(&self, state: &ConnState) -> Instant {
        let next_look = Instant::now() + tick(&self.settings);
        self.hard_stop.unwrap_or_else(|| {
            state
                .deadline(&self.settings)
                .map_or(next_look, |d| d.min(next_look))
        })
    }

    /// The alarm went off: a stalled request head or an idle HTTP/1 connection is closed; an
    /// idle HTTP/2 connection gets GOAWAY and `header_timeout` to go before it is dropped.
    fn on_alarm(&mut self, state: &ConnState, listener: &'static str) -> Act {
        let now = Instant::now();
        if self.hard_stop.is_some_and(|t| now >= t) {
            return Act::Close;
        }
        if state.deadline(&self.settings).is_none_or(|d| now < d) {
            return Act::Wait;
        }
        if state.reading_head() {
            debug!(listener, "request head not received in time; closing");
            return Act::Close;
        }
        if !self.h2 {
            // HTTP/1 with no request in flight: nothing to lose by closing.
            debug!(listener, "idle connection closed");
            return Act::Close;
        }
        self.hard_stop
            .get_or_insert(now + self.settings.header_timeout);
        self.goaway()
    }

    /// What the shutdown asks of this connection: at `Stopped` it is dropped. HTTP/2
    /// connections open before the drain get GOAWAY at once; one opened during the drain
    /// first serves the request it was opened for.
    fn on_phase(&mut self, phase: Phase, state: &ConnState) -> Act {
        if phase == Phase::Stopped {
            return Act::Close;
        }
        if phase >= Phase::Draining
            && self.h2
            && (!self.opened_draining || state.served.load(Ordering::Acquire) > 0)
        {
            return self.goaway();
        }
        Act::Wait
    }

    fn goaway(&mut self) -> Act {
        if std::mem::replace(&mut self.goaway, true) {
            Act::Wait
        } else {
            Act::GoAway
        }
    }
}

/// How often the watchdog looks at a connection's facts when no deadline is nearer.
fn tick(settings: &Settings) -> Duration {
    (settings.header_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// Marks a response after which the HTTP/1 connection must close: the request body was not
/// (fully) read, so the connection cannot carry another request. See [`BodyError`](super::BodyError).
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
