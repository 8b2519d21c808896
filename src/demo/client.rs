//! A small HTTPS client for talking to the webhook as the API server does: rustls (ring),
//! HTTP/2 or HTTP/1.1, trusting one CA. Used by the demo and the tests.

use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::tls::{TlsError, client_config};

/// Client failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("request: {0}")]
    Request(String),
    #[error("timed out")]
    Timeout,
}

/// A client bound to one HTTPS base address.
#[derive(Clone)]
pub struct WebhookClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
}

impl WebhookClient {
    /// `base` like `https://127.0.0.1:8443`; only certificates signed by `ca_pem` are trusted.
    pub fn new(ca_pem: &[u8], base: &str) -> Result<Self, ClientError> {
        let tls = client_config(ca_pem)?;
        // TCP_NODELAY, as the API server's client does: small requests must not wait for ACKs.
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// POSTs a JSON body; returns the status and the whole response body.
    pub async fn post_json(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let req = hyper::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        self.send(req).await
    }

    /// GETs a path.
    pub async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), ClientError> {
        let req = hyper::Request::get(format!("{}{path}", self.base))
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        self.send(req).await
    }

    async fn send(
        &self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let fut = async {
            let rsp = self
                .client
                .request(req)
                .await
                .map_err(|e| ClientError::Request(format!("{e:?}")))?;
            let status = rsp.status();
            let body = rsp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Request(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .map_err(|_| ClientError::Timeout)?
    }
}
