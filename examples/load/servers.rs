//! The two servers under test, started in the same process on loopback: the floor (the least
//! any admission webhook must do, on helm-guard's own stack: axum, axum-server, rustls with
//! ring, `TCP_NODELAY`; it reads the request uid and answers allow, like
//! `shared/bench/noop-webhook`) and helm-guard's `server::start` as shipped.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use serde::Deserialize;

#[derive(Deserialize)]
struct Review<'a> {
    #[serde(borrow)]
    request: Request<'a>,
}

#[derive(Deserialize)]
struct Request<'a> {
    uid: &'a str,
}

/// Reads the uid far enough to answer (the rest of the review is skipped, not built).
async fn allow(body: Bytes) -> impl IntoResponse {
    let uid = serde_json::from_slice::<Review>(&body)
        .map(|r| r.request.uid.to_owned())
        .unwrap_or_default();
    let out = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":{},"allowed":true}}}}"#,
        serde_json::to_string(&uid).unwrap_or_default()
    );
    ([(header::CONTENT_TYPE, "application/json")], out)
}

/// The floor: a no-op webhook with helm-guard's routes.
pub struct Floor {
    handle: Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Floor {
    pub async fn start(config: RustlsConfig) -> anyhow::Result<(Self, SocketAddr)> {
        let app = Router::new()
            .route("/validate/{mode}", post(allow))
            .route("/validate", post(allow))
            .route("/mutate/{mode}", post(allow))
            .route("/healthz", get(|| async { "ok" }));
        let handle: Handle<SocketAddr> = Handle::new();
        let acceptor = RustlsAcceptor::new(config).acceptor(NoDelayAcceptor::new());
        let srv = axum_server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .acceptor(acceptor)
            .handle(handle.clone());
        let task = tokio::spawn(async move { srv.serve(app.into_make_service()).await });
        let addr = handle.listening().await.context("floor did not start")?;
        Ok((Self { handle, task }, addr))
    }

    pub async fn shutdown(self, drain: std::time::Duration) -> anyhow::Result<()> {
        self.handle.graceful_shutdown(Some(drain));
        self.task.await??;
        Ok(())
    }
}
