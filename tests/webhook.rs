//! The webhook over real TLS: rustls server, rustls client trusting a CA made with rcgen,
//! AdmissionReviews shaped as the API server sends them, release records encoded as Helm
//! encodes them.

mod common;

use common::{index_of, rollback};

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use helm_guard::demo::build::History;
use helm_guard::demo::client::WebhookClient;
use helm_guard::demo::fixtures::record_review;
use helm_guard::policy::{Mode, Settings};
use helm_guard::server::{self, AppState, Running};
use helm_guard::{demo, tls, transport};

const CANARY: &str = "CANARY-db-pa55word-do-not-leak";

fn history() -> History {
    common::history(CANARY)
}

struct Fixture {
    running: Running,
    client: WebhookClient,
    ready: Arc<AtomicBool>,
    ca: String,
}

async fn start(limits: server::ServeLimits, mode: Mode) -> Fixture {
    start_with(limits, mode, transport::Settings::default()).await
}

async fn start_with(
    limits: server::ServeLimits,
    mode: Mode,
    settings: transport::Settings,
) -> Fixture {
    tls::install_provider();
    let bundle = tls::generate(&["127.0.0.1".to_owned()], 1).expect("certs");
    let ready = Arc::new(AtomicBool::new(true));
    let state = AppState::new(
        index_of(&history()),
        Settings::new(mode),
        limits,
        ready.clone(),
    );
    let config = RustlsConfig::from_config(Arc::new(
        tls::server_config(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())
            .expect("server config"),
    ));
    let running = server::start_with(
        state,
        config,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        settings,
    )
    .await
    .expect("server starts");
    let client = WebhookClient::new(
        bundle.ca_pem.as_bytes(),
        &format!("https://127.0.0.1:{}", running.addr.port()),
    )
    .expect("client");
    Fixture {
        running,
        client,
        ready,
        ca: bundle.ca_pem,
    }
}

async fn post(client: &WebhookClient, path: &str, review: &Value) -> (u16, Value, String) {
    let (status, body) = client
        .post_json(path, serde_json::to_vec(review).expect("json"))
        .await
        .expect("request");
    let text = String::from_utf8_lossy(&body).into_owned();
    (
        status.as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_story_end_to_end() {
    let mut out = Vec::new();
    let failures = demo::run(&mut out).await.expect("demo runs");
    let transcript = String::from_utf8(out).expect("utf-8");
    assert_eq!(failures, 0, "{transcript}");
    assert!(transcript.contains("enforce: denied"), "{transcript}");
    assert!(!transcript.contains(demo::DEMO_PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_over_tls() {
    let f = start(server::ServeLimits::default(), Mode::Audit).await;
    let review = rollback().review("uid-1");

    let (status, v, _) = post(&f.client, "/validate/enforce", &review).await;
    assert_eq!(status, 200);
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "uid-1");
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(v["response"]["status"]["code"], 403);

    // The default route uses the configured default mode (audit here).
    let (_, v, _) = post(&f.client, "/validate", &review).await;
    assert_eq!(v["response"]["allowed"], true);
    assert!(
        !v["response"]["warnings"]
            .as_array()
            .expect("warnings")
            .is_empty()
    );
    assert!(v["response"]["auditAnnotations"]["drift"].is_string());

    // The mutating answer carries the patch as base64 (not an array of numbers), and it
    // applies to the object the API server holds.
    let (_, v, _) = post(&f.client, "/mutate/audit", &review).await;
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    let patch = STANDARD
        .decode(v["response"]["patch"].as_str().expect("patch is a string"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("RFC 6902");
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).expect("applies");
    assert!(object["metadata"]["annotations"]["helm-guard.io/drift"].is_string());

    // Reinvoked on its own output, the mutating webhook has nothing to change.
    let mut again = review.clone();
    again["request"]["object"] = object;
    let (_, v, _) = post(&f.client, "/mutate/audit", &again).await;
    assert!(v["response"].get("patch").is_none(), "{v}");

    let (_, v, _) = post(&f.client, "/validate/off", &review).await;
    assert_eq!(v["response"]["allowed"], true);
    assert!(v["response"].get("warnings").is_none());
    f.running
        .shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_answers_are_deliberate() {
    let limits = server::ServeLimits {
        max_body_bytes: 256 << 10,
        ..server::ServeLimits::default()
    };
    let f = start(limits, Mode::Enforce).await;

    // Unreadable bodies: 200 with a reasoned, uid-carrying invalid response.
    let (status, v, _) = post(
        &f.client,
        "/validate/enforce",
        &json!({"request": {"uid": "u-9", "oops": true}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["response"]["uid"], "u-9");
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(v["response"]["status"]["code"], 400);
    let (status, body) = f
        .client
        .post_json("/validate/enforce", b"\x00\xffnot json".to_vec())
        .await
        .expect("request");
    assert_eq!(status.as_u16(), 200);
    assert!(String::from_utf8_lossy(&body).contains("not an AdmissionReview"));

    // Too large: 413, so the failure policy decides.
    let mut big = rollback().review("u-big");
    big["request"]["object"]["metadata"]["annotations"]["filler"] = json!("x".repeat(300 << 10));
    let (status, _, _) = post(&f.client, "/validate/enforce", &big).await;
    assert_eq!(status, 413);

    // Unknown mode: loud.
    let (status, _, _) = post(&f.client, "/validate/strict", &rollback().review("u")).await;
    assert_eq!(status, 404);

    // Health and readiness, on the TLS port and on the admin port.
    let (status, _) = f.client.get("/healthz").await.expect("healthz");
    assert_eq!(status.as_u16(), 200);
    f.ready.store(false, Ordering::Release);
    let (status, _) = f.client.get("/readyz").await.expect("readyz");
    assert_eq!(status.as_u16(), 503);
    f.ready.store(true, Ordering::Release);
    let (status, _) = f.client.get("/readyz").await.expect("readyz");
    assert_eq!(status.as_u16(), 200);
    // The admin port speaks plain HTTP: probes and Prometheus.
    let admin = f.running.admin_addr.expect("admin listener");
    let metrics = plain_get(admin, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        // Two unreadable bodies and the refused 413: every request is counted.
        metrics.contains(r#"helm_guard_admission_requests_total{webhook="validate",mode="enforce",kind="other",verdict="error",actor="none"} 3"#),
        "{metrics}"
    );
    assert!(
        plain_get(admin, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    f.running
        .shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_hands_over_to_the_failure_policy() {
    let limits = server::ServeLimits {
        deadline: Duration::from_millis(1),
        ..server::ServeLimits::default()
    };
    let f = start(limits, Mode::Enforce).await;
    // A body that takes far longer than 1 ms to parse (~12 MB of annotations).
    let mut slow = rollback().review("u-slow");
    for i in 0..3000 {
        slow["request"]["object"]["metadata"]["annotations"][format!("filler-{i}")] =
            json!("x".repeat(4000));
    }
    let (status, _, _) = post(&f.client, "/validate/enforce", &slow).await;
    assert_eq!(status, 503);
    f.running
        .shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");
}

async fn plain_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin port");
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    conn.read_to_string(&mut out).await.expect("read");
    out
}

/// Captures every log line of the process.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_never_leaves_the_process() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("first subscriber of this test process");

    let f = start(server::ServeLimits::default(), Mode::Audit).await;
    let mut responses = String::new();
    let h = history();
    let mut requests = vec![
        rollback().review("c-1"),
        rollback().with_break_glass("INC-1").review("c-2"),
        // The release record itself passing through admission (Secret and ConfigMap forms).
        record_review("c-3", &h.revisions[1].secret(), "CREATE", "helm-user"),
        record_review("c-4", &h.revisions[1].config_map(), "UPDATE", "helm-user"),
    ];
    // A body that fails to parse after the canary.
    let mut broken = rollback().review("c-5");
    broken["request"]["object"]["spec"]["template"]["spec"]["containers"] = json!(CANARY);
    requests.push(broken);
    for (i, r) in requests.iter().enumerate() {
        for path in ["/validate/enforce", "/validate/audit", "/mutate/audit"] {
            let (_, _, text) = post(&f.client, path, r).await;
            responses.push_str(&text);
            let _ = i;
        }
    }
    let (_, body) = f
        .client
        .post_json("/validate", format!("{{\"request\": {CANARY}").into_bytes())
        .await
        .expect("post");
    responses.push_str(&String::from_utf8_lossy(&body));
    f.running
        .shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");

    let logs = String::from_utf8(capture.0.lock().expect("logs").clone()).expect("utf-8");
    assert!(
        logs.contains("reviewed"),
        "the request log lines were captured: {logs}"
    );
    assert!(!logs.contains(CANARY), "canary in logs");
    assert!(!responses.contains(CANARY), "canary in responses");
    assert!(responses.contains("c-5"), "{responses}");
}

/// Enforce without holes, over TLS: renamed and added containers are judged, reviews that are
/// not `admission.k8s.io/v1` get the 400-coded answer, answers stay small whatever the input,
/// and an undecodable release record passes with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_has_no_holes_over_tls() {
    // The deadline is a safety net here: a debug build on a busy machine is slow with a
    // 1 MiB review, and this test is about what comes back, not when.
    let limits = server::ServeLimits {
        deadline: Duration::from_secs(60),
        ..server::ServeLimits::default()
    };
    let f = start(limits, Mode::Enforce).await;
    let containers = "/request/object/spec/template/spec/containers";

    // Renamed container with another image.
    let mut renamed = rollback().review("u-rename");
    let c0 = renamed.pointer_mut(containers).expect("containers");
    c0[0]["name"] = json!("app2");
    c0[0]["image"] = json!("ghcr.io/acme/web:6.6.6");
    let (_, v, _) = post(&f.client, "/validate/enforce", &renamed).await;
    assert_eq!(v["response"]["allowed"], false, "{v}");
    let msg = v["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains("\"app2\"") && msg.contains("ghcr.io/acme/web:6.6.6"),
        "{msg}"
    );

    // A container added by hand (the old object is the chart's: PG15 everywhere).
    let mut added = rollback().review("u-add");
    let old = added["request"]["oldObject"]["spec"]["template"]["spec"]["containers"].clone();
    let mut new = old.as_array().cloned().unwrap_or_default();
    new.push(json!({"name": "debug", "image": "busybox:1.36"}));
    *added.pointer_mut(containers).expect("containers") = json!(new);
    let (_, v, _) = post(&f.client, "/validate/enforce", &added).await;
    assert_eq!(v["response"]["allowed"], false, "{v}");
    assert!(v.to_string().contains("\\\"debug\\\""), "{v}");

    // Not v1: the 400-coded error, never a verdict.
    for (api_version, kind) in [
        ("admission.k8s.io/v2", "AdmissionReview"),
        ("admission.k8s.io/v1beta1", "AdmissionReview"),
        ("admission.k8s.io/v1", "ConfigMap"),
    ] {
        let mut r = rollback().review("u-v");
        r["apiVersion"] = json!(api_version);
        r["kind"] = json!(kind);
        let (status, v, _) = post(&f.client, "/validate/enforce", &r).await;
        assert_eq!(status, 200);
        assert_eq!(
            v["response"]["status"]["code"], 400,
            "{api_version} {kind}: {v}"
        );
        assert_eq!(v["response"]["uid"], "u-v");
    }

    // 10,000 changed containers and a 1 MiB image: a few KiB back, in every answer.
    let mut many = rollback().review("u-many");
    let list: Vec<Value> = (0..10_000)
        .map(|i| json!({"name": format!("c{i}"), "image": format!("evil.example.com/x:{i}")}))
        .chain([
            json!({"name": "huge", "image": format!("evil.example.com/x:{}", "9".repeat(1 << 20))}),
        ])
        .collect();
    *many.pointer_mut(containers).expect("containers") = json!(list);
    for path in ["/validate/enforce", "/validate/audit", "/mutate/audit"] {
        let (status, _, text) = post(&f.client, path, &many).await;
        assert_eq!(status, 200, "{path}");
        assert!(text.len() < 24 << 10, "{path}: {} bytes", text.len());
    }

    // A release record that does not decode: allowed, with a warning naming it.
    let mut record = helm_guard::demo::fixtures::record_review(
        "u-rec",
        &history().last().secret(),
        "CREATE",
        "helm",
    );
    record["request"]["object"]["data"]["release"] = json!("bm90LWhlbG0=");
    let (_, v, _) = post(&f.client, "/validate/enforce", &record).await;
    assert_eq!(v["response"]["allowed"], true, "{v}");
    let w = v["response"]["warnings"][0].as_str().unwrap_or_default();
    assert!(
        w.contains("sh.helm.release.v1.db.v") && w.contains("not checked"),
        "{w}"
    );
    assert!(!v.to_string().contains(CANARY));

    // A well-formed request for a kind not judged: allowed, counted as not-checked.
    let mut service = rollback().review("u-svc");
    service["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Service"});
    let (_, v, _) = post(&f.client, "/validate/enforce", &service).await;
    assert_eq!(v["response"]["allowed"], true);
    let metrics = plain_get(f.running.admin_addr.expect("admin"), "/metrics").await;
    assert!(
        metrics.contains(r#"kind="other",verdict="not-checked",actor="none"} 1"#),
        "{metrics}"
    );
    f.running
        .shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");
}

/// A TLS connection that speaks HTTP/1.1 by hand (ALPN `http/1.1`).
async fn raw_tls(f: &Fixture) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_with_alpn(f, b"http/1.1").await
}

async fn tls_with_alpn(
    f: &Fixture,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = (*tls::client_config(f.ca.as_bytes()).expect("CA")).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(f.running.addr)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake")
}

/// Everything the server sends until it closes the connection. A close without TLS
/// `close_notify` counts as a close; the time limit is only a safety net.
async fn until_closed(conn: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf)).await {
            Err(_) => panic!(
                "the server still holds the connection (safety net); got {:?}",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let settings = transport::Settings {
        handshake_timeout: Duration::from_millis(300),
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(500),
        ..transport::Settings::default()
    };
    let limits = server::ServeLimits {
        max_body_bytes: 1 << 20,
        deadline: Duration::from_millis(500),
    };
    let f = start_with(limits, Mode::Enforce, settings).await;

    // A TCP connection that never starts TLS: closed at the handshake timeout.
    let mut tcp = tokio::net::TcpStream::connect(f.running.addr)
        .await
        .expect("connect");
    assert_eq!(until_closed(&mut tcp).await, "");

    // TLS, then half a request head: closed at the header timeout, nothing answered.
    let mut conn = raw_tls(&f).await;
    conn.write_all(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        .await
        .expect("write");
    assert_eq!(until_closed(&mut conn).await, "");

    // TLS, then no request at all: the first head is due within the header timeout too.
    let mut conn = raw_tls(&f).await;
    assert_eq!(until_closed(&mut conn).await, "");

    // Half a body: 503 at the request deadline (the failure policy decides), then closed.
    let mut conn = raw_tls(&f).await;
    conn.write_all(
        b"POST /validate/enforce HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"request\": {",
    )
    .await
    .expect("write");
    let answer = until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");

    // An idle keep-alive connection: answered, kept open, then closed at the idle timeout.
    let mut conn = raw_tls(&f).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let answer = until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("connection: close"), "{answer}");

    // `Expect: 100-continue` with an oversized Content-Length: 413 at once, no `100 Continue`
    // (the client never sends the 20 MiB).
    let mut conn = raw_tls(&f).await;
    conn.write_all(
        b"POST /validate/enforce HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/json\r\nContent-Length: 20971520\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .await
    .expect("write");
    let answer = until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");

    // The admin port: half a request head, closed at the header timeout.
    let admin = f.running.admin_addr.expect("admin listener");
    let mut tcp = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .expect("write");
    assert_eq!(until_closed(&mut tcp).await, "");

    // An idle HTTP/2 connection: answered, then GOAWAY at the idle timeout and closed.
    let h2 = tls_with_alpn(&f, b"h2").await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(h2),
    )
    .await
    .expect("h2 handshake");
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get("https://127.0.0.1/healthz")
        .body(http_body_util::Empty::<axum::body::Bytes>::new())
        .expect("request");
    let res = sender.send_request(request).await.expect("healthz");
    assert_eq!(res.status(), 200);
    tokio::time::timeout(Duration::from_secs(30), driver)
        .await
        .expect("the server ends an idle HTTP/2 connection (safety net)")
        .expect("task")
        .expect("a clean GOAWAY, not an error");
    assert!(sender.is_closed());

    // Meanwhile good requests are answered.
    let (status, v, _) = post(&f.client, "/validate/enforce", &rollback().review("u-ok")).await;
    assert_eq!(status, 200);
    assert_eq!(v["response"]["allowed"], false);
    f.running
        .shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_evicts_silent_connections_and_holds_the_rest() {
    use tokio::io::AsyncWriteExt;
    let settings = transport::Settings {
        max_connections: 1,
        handshake_timeout: Duration::from_secs(60),
        header_timeout: Duration::from_secs(60),
        ..transport::Settings::default()
    };
    let mut f = start_with(server::ServeLimits::default(), Mode::Enforce, settings).await;

    // The only slot taken by a TCP connection that says nothing: a new client takes its place.
    let mut silent = tokio::net::TcpStream::connect(f.running.addr)
        .await
        .expect("connect");
    let (status, _) = f.client.get("/healthz").await.expect("healthz");
    assert_eq!(status.as_u16(), 200);
    assert_eq!(
        until_closed(&mut silent).await,
        "",
        "the silent one gave way"
    );

    // The slot taken by a connection that has been answered (kept alive): it is not evicted,
    // a new connection waits until it closes.
    let fresh = WebhookClient::new(
        f.ca.as_bytes(),
        &format!("https://127.0.0.1:{}", f.running.addr.port()),
    )
    .expect("client");
    // Dropping the old client closes its pooled connection, which frees the slot.
    drop(std::mem::replace(&mut f.client, fresh));
    let mut talking = raw_tls(&f).await;
    talking
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut talking, &mut head)
        .await
        .expect("answered");
    assert_eq!(&head, b"HTTP/1.1 200");
    let client = f.client.clone();
    let second = tokio::spawn(async move { client.get("/healthz").await.map(|(s, _)| s.as_u16()) });
    // Negative check: with no limit, the request is answered in milliseconds; a slow machine
    // can only make this pass, never fail.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a connection was served beyond the limit"
    );
    drop(talking);
    let status = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("served once the slot is free (safety net)")
        .expect("task")
        .expect("healthz");
    assert_eq!(status, 200);
    f.running
        .shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_answers_readyz_503_and_closes_http1_after_the_response() {
    use tokio::io::AsyncWriteExt;
    let f = start(server::ServeLimits::default(), Mode::Enforce).await;
    // A kept-alive connection, open before the drain.
    let mut conn = raw_tls(&f).await;
    f.running.begin_drain();
    let admin = f.running.admin_addr.expect("admin listener");
    assert!(
        plain_get(admin, "/readyz")
            .await
            .starts_with("HTTP/1.1 503")
    );
    // New connections are still accepted during the grace period.
    let (status, _) = f.client.get("/readyz").await.expect("readyz");
    assert_eq!(status.as_u16(), 503);
    // The request on the old connection is answered, with `Connection: close`, then the
    // server closes it.
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let answer = until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    f.running
        .shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");
}
