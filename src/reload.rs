//! Serving-certificate hot reload: `serve` picks up a rotated certificate and key without a
//! restart and without failing a request.
//!
//! Kubernetes updates a mounted Secret by writing the new files into a fresh timestamped
//! directory and atomically swapping the `..data` symlink to it (kubelet's `AtomicWriter`);
//! `tls.crt` and `tls.key` are themselves symlinks into `..data`:
//!
//! ```text
//!  /etc/helm-guard/tls/tls.crt -> ..data/tls.crt
//!  /etc/helm-guard/tls/..data  -> ..2026_11_26_10_00_00.1     (renamed over by ..data_tmp)
//! ```
//!
//! The files a path watcher subscribed to never change, so inotify on them misses the update
//! (cilium/cilium#13621, cloudflare/certinel#20). We poll instead: every few seconds both files
//! are read *through* the symlinks and compared with the bytes being served. When they differ,
//! a new rustls configuration is built and swapped into the shared [`RustlsConfig`], which
//! the transport (src/transport.rs) reads on every handshake. Connections already open keep their session;
//! new ones get the new certificate. A pair that does not form a valid configuration — a
//! half-finished rotation (new certificate, old key), a truncated file, a missing file — is
//! not applied: the previous configuration keeps serving and the next tick tries again.
//!
//! No key material is logged: errors carry only paths and rustls/PEM error kinds.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tracing::{info, warn};

use crate::tls::{self, TlsError};

/// How often `serve` looks at the certificate files. The kubelet refreshes a Secret volume
/// within about a minute of the Secret changing, so this adds little to that.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Why a certificate/key pair was not (re)loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The files do not form a usable pair (bad PEM, or a key that does not match the
    /// certificate: typically a rotation caught halfway).
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The result of one look at the files.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// The files hold the bytes already serving, or a pair already rejected.
    Unchanged,
    /// A new certificate and key are serving (new connections get them).
    Reloaded {
        /// Expiry of the new serving certificate, Unix seconds (if its DER could be read).
        not_after: Option<i64>,
    },
    /// The files changed but are not usable (yet); the previous pair keeps serving.
    Kept { error: ReloadError },
}

/// Keeps a [`RustlsConfig`] in step with a certificate and key on disk.
pub struct CertReloader {
    config: RustlsConfig,
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The bytes behind the serving configuration.
    serving: (Vec<u8>, Vec<u8>),
    /// The last pair that failed, so it is reported once rather than every tick.
    rejected: Option<(Vec<u8>, Vec<u8>)>,
    not_after: Option<i64>,
}

// Not derived: the key bytes must never reach a log line through `{:?}`.
impl fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertReloader")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertReloader {
    /// Reads the pair and builds the serving configuration; fails if the pair is not usable.
    pub async fn load(cert_path: PathBuf, key_path: PathBuf) -> Result<Self, ReloadError> {
        let (cert, key) = read_pair(&cert_path, &key_path).await?;
        let server_config = tls::server_config(&cert, &key)?;
        Ok(Self {
            config: RustlsConfig::from_config(Arc::new(server_config)),
            not_after: not_after_pem(&cert),
            cert_path,
            key_path,
            serving: (cert, key),
            rejected: None,
        })
    }

    /// The shared configuration to hand to the server; reloads show up in every clone.
    pub fn config(&self) -> RustlsConfig {
        self.config.clone()
    }

    /// Expiry of the serving certificate (the first one in the chain), Unix seconds.
    pub fn not_after(&self) -> Option<i64> {
        self.not_after
    }

    /// Looks at the files once and applies them if they changed and form a usable pair.
    pub async fn check(&mut self) -> ReloadOutcome {
        let (cert, key) = match read_pair(&self.cert_path, &self.key_path).await {
            Ok(pair) => pair,
            Err(error) => return ReloadOutcome::Kept { error },
        };
        if (&cert, &key) == (&self.serving.0, &self.serving.1) {
            self.rejected = None;
            return ReloadOutcome::Unchanged;
        }
        if self
            .rejected
            .as_ref()
            .is_some_and(|(c, k)| (c, k) == (&cert, &key))
        {
            return ReloadOutcome::Unchanged;
        }
        match tls::server_config(&cert, &key) {
            Ok(server_config) => {
                self.config.reload_from_config(Arc::new(server_config));
                self.not_after = not_after_pem(&cert);
                self.serving = (cert, key);
                self.rejected = None;
                ReloadOutcome::Reloaded {
                    not_after: self.not_after,
                }
            }
            Err(error) => {
                self.rejected = Some((cert, key));
                ReloadOutcome::Kept {
                    error: error.into(),
                }
            }
        }
    }

    /// Checks every `every` forever, logging each change and handing it to `on_change`
    /// (not called for [`ReloadOutcome::Unchanged`]). Spawn it; abort it on shutdown.
    pub async fn run(mut self, every: Duration, on_change: impl Fn(&ReloadOutcome)) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate; the pair was just loaded
        loop {
            ticks.tick().await;
            let outcome = self.check().await;
            if !matches!(outcome, ReloadOutcome::Unchanged) {
                self.log(&outcome);
                on_change(&outcome);
            }
        }
    }

    fn log(&self, outcome: &ReloadOutcome) {
        match outcome {
            ReloadOutcome::Unchanged => {}
            ReloadOutcome::Reloaded { not_after } => info!(
                cert = %self.cert_path.display(),
                not_after = ?not_after,
                "serving certificate reloaded"
            ),
            // A missing or unreadable file is reported every tick until it is fixed.
            ReloadOutcome::Kept { error } => warn!(
                %error,
                cert = %self.cert_path.display(),
                key = %self.key_path.display(),
                "certificate files changed but are not usable (yet); still serving the \
                 previous pair, retrying"
            ),
        }
    }
}

/// [`CertReloader::run`] for a configuration built elsewhere: the first check applies the
/// files once (harmless if they are the ones already serving), then only changes.
pub async fn watch(
    config: RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
    on_change: impl Fn(&ReloadOutcome),
) {
    let mut reloader = CertReloader {
        config,
        cert_path: cert,
        key_path: key,
        serving: (Vec::new(), Vec::new()),
        rejected: None,
        not_after: None,
    };
    let first = reloader.check().await;
    if !matches!(first, ReloadOutcome::Unchanged) {
        reloader.log(&first);
        on_change(&first);
    }
    reloader.run(every, on_change).await;
}

/// Reads both files, following symlinks (`tls.crt -> ..data/tls.crt`).
async fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), ReloadError> {
    let read = |path: &Path| {
        let path = path.to_owned();
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| ReloadError::Read { path, source })
        }
    };
    Ok((read(cert).await?, read(key).await?))
}

/// Expiry of the first certificate in a PEM chain, Unix seconds.
fn not_after_pem(pem: &[u8]) -> Option<i64> {
    let first = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    not_after_der(&first)
}

/// `tbsCertificate.validity.notAfter` of a DER certificate (RFC 5280 §4.1), read with a
/// minimal DER walk rather than a new X.509 dependency. `None` on anything unexpected.
fn not_after_der(der: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0; // [0] EXPLICIT, optional
    let (SEQUENCE, certificate, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    if let (VERSION, _, after) = tlv(rest)? {
        rest = after;
    }
    // serialNumber, signature, issuer
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (SEQUENCE, validity, _) = tlv(rest)? else {
        return None;
    };
    let (_, _, after_not_before) = tlv(validity)?;
    let (tag, not_after, _) = tlv(after_not_before)?;
    asn1_time(tag, not_after)
}

/// One DER element: (tag, contents, what follows). Definite lengths up to 4 bytes only.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18), the
/// forms RFC 5280 allows, to Unix seconds.
fn asn1_time(tag: u8, value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i32 = digits(text.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (digits(text.get(..4)?)?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 11 || !rest.ends_with('Z') {
        return None;
    }
    let two = |i: usize| -> Option<u8> { digits(rest.get(i..i + 2)?) };
    let month = time::Month::try_from(two(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, two(2)?).ok()?;
    let clock = time::Time::from_hms(two(4)?, two(6)?, two(8)?).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    )
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::Instant;

    use axum::Router;
    use axum::routing::get;
    use hyper::StatusCode;
    use tokio::sync::mpsc;

    use super::*;
    use crate::demo::client::WebhookClient;
    use crate::tls::Bundle;

    fn bundle() -> Bundle {
        tls::generate(&["127.0.0.1".to_owned()], 30).expect("certificates")
    }

    /// A TLS server answering `GET /healthz` on 127.0.0.1 with `config`, through the
    /// webhook's own transport (a TLS acceptor per handshake from the shared config).
    async fn serve(config: RustlsConfig) -> (crate::transport::Running, String) {
        let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
        let running = crate::transport::start(
            app,
            config,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            None,
            crate::transport::Settings::default(),
            Arc::new(AtomicBool::new(false)),
        )
        .await
        .expect("listening");
        let base = format!("https://{}", running.addr);
        (running, base)
    }

    /// Whether a fresh connection trusting only `ca_pem` gets `200` from `/healthz`.
    async fn trusted_by(ca_pem: &str, base: &str) -> bool {
        let client = WebhookClient::new(ca_pem.as_bytes(), base).expect("client");
        matches!(client.get("/healthz").await, Ok((StatusCode::OK, _)))
    }

    /// Writes one kubelet "version" directory: `<vol>/<name>/{tls.crt,tls.key}`.
    fn write_version(vol: &Path, name: &str, b: &Bundle) {
        let dir = vol.join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("tls.crt"), &b.cert_pem).expect("write cert");
        std::fs::write(dir.join("tls.key"), &b.key_pem).expect("write key");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubernetes_data_symlink_swap_is_served_without_failed_requests() {
        use std::os::unix::fs::symlink;
        tls::install_provider();
        let (one, two) = (bundle(), bundle());
        let vol = tempfile::tempdir().expect("tempdir");
        let vol = vol.path();
        // The layout kubelet writes for a Secret volume.
        write_version(vol, "..2026_11_26_10_00_00.1", &one);
        symlink("..2026_11_26_10_00_00.1", vol.join("..data")).expect("..data");
        symlink("..data/tls.crt", vol.join("tls.crt")).expect("tls.crt");
        symlink("..data/tls.key", vol.join("tls.key")).expect("tls.key");

        let reloader = CertReloader::load(vol.join("tls.crt"), vol.join("tls.key"))
            .await
            .expect("load");
        assert_eq!(reloader.not_after(), Some(one.not_after));
        let (handle, base) = serve(reloader.config()).await;
        let (tx, mut changes) = mpsc::unbounded_channel();
        let watcher = tokio::spawn(reloader.run(Duration::from_millis(50), move |o| {
            let _ = tx.send(match o {
                ReloadOutcome::Reloaded { not_after } => Ok(*not_after),
                other => Err(format!("{other:?}")),
            });
        }));

        assert!(
            trusted_by(&one.ca_pem, &base).await,
            "CA #1 before the swap"
        );
        assert!(
            !trusted_by(&two.ca_pem, &base).await,
            "CA #2 before the swap"
        );
        // A keep-alive connection opened before the swap (as the API server holds them).
        let kept_alive = WebhookClient::new(one.ca_pem.as_bytes(), &base).expect("client");
        assert_eq!(
            kept_alive.get("/healthz").await.expect("kept-alive").0,
            StatusCode::OK
        );

        // Hammer, concurrently with the swap: a new connection (a new handshake) per request
        // and one pooled keep-alive connection, both trusting the two CAs as a caBundle does
        // during a CA rotation. Bounded in time; runs until enough requests were answered
        // after the reload.
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU32::new(0));
        let hammer = tokio::spawn({
            let (stop, answered, base) = (stop.clone(), answered.clone(), base.clone());
            let both = format!("{}{}", one.ca_pem, two.ca_pem);
            async move {
                let pooled = WebhookClient::new(both.as_bytes(), &base).expect("client");
                let mut failed = Vec::new();
                let until = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    let fresh = WebhookClient::new(both.as_bytes(), &base).expect("client");
                    for (how, client) in [("new connection", &fresh), ("keep-alive", &pooled)] {
                        match client.get("/healthz").await {
                            Ok((StatusCode::OK, _)) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failed.push(format!("{how}: {other:?}")),
                        }
                    }
                }
                failed
            }
        });
        let at_least = async |n: u32| {
            tokio::time::timeout(Duration::from_secs(20), async {
                while answered.load(Ordering::Relaxed) < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the hammer makes progress");
        };
        at_least(10).await;

        // The swap, as kubelet's AtomicWriter does it: new version directory, ..data_tmp
        // pointing at it, rename over ..data, then the old directory goes.
        write_version(vol, "..2026_11_26_11_00_00.2", &two);
        symlink("..2026_11_26_11_00_00.2", vol.join("..data_tmp")).expect("..data_tmp");
        std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).expect("swap");
        std::fs::remove_dir_all(vol.join("..2026_11_26_10_00_00.1")).expect("rm old");

        let reloaded = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                // A read racing the swap may be reported and retried; wait for the reload.
                if let Some(Ok(not_after)) = changes.recv().await {
                    return not_after;
                }
            }
        })
        .await
        .expect("reloaded within 10 s");
        assert_eq!(reloaded, Some(two.not_after));
        at_least(answered.load(Ordering::Relaxed) + 20).await;
        stop.store(true, Ordering::Relaxed);
        let failed = hammer.await.expect("hammer");
        let ok = answered.load(Ordering::Relaxed);
        assert!(
            failed.is_empty(),
            "{} failed, {ok} answered: {failed:?}",
            failed.len()
        );

        assert!(trusted_by(&two.ca_pem, &base).await, "CA #2 after the swap");
        assert!(
            !trusted_by(&one.ca_pem, &base).await,
            "CA #1 after the swap"
        );
        assert_eq!(
            kept_alive.get("/healthz").await.expect("kept-alive").0,
            StatusCode::OK,
            "an open connection survives the swap"
        );
        watcher.abort();
        let _ = handle.shutdown(Duration::ZERO).await;
    }

    #[tokio::test]
    async fn half_rotated_pair_keeps_the_old_certificate_serving() {
        tls::install_provider();
        let (one, two) = (bundle(), bundle());
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &one.cert_pem).expect("cert");
        std::fs::write(&key, &one.key_pem).expect("key");
        let mut reloader = CertReloader::load(cert.clone(), key.clone())
            .await
            .expect("load");
        let (handle, base) = serve(reloader.config()).await;
        assert!(matches!(reloader.check().await, ReloadOutcome::Unchanged));

        // New certificate, old key: rejected, the old pair keeps serving.
        std::fs::write(&cert, &two.cert_pem).expect("cert");
        let outcome = reloader.check().await;
        let ReloadOutcome::Kept { error } = &outcome else {
            panic!("half-rotated pair applied: {outcome:?}");
        };
        assert!(matches!(error, ReloadError::Tls(_)), "{error}");
        let message = format!("{error} {error:?} {reloader:?}");
        assert!(
            !message.contains("PRIVATE KEY") && !message.contains(&one.key_pem[30..60]),
            "{message}"
        );
        assert!(
            trusted_by(&one.ca_pem, &base).await,
            "old pair still serving"
        );
        assert!(!trusted_by(&two.ca_pem, &base).await);
        assert_eq!(reloader.not_after(), Some(one.not_after));
        // The same rejected pair is not reported again.
        assert!(matches!(reloader.check().await, ReloadOutcome::Unchanged));

        // The key follows: applied.
        std::fs::write(&key, &two.key_pem).expect("key");
        let outcome = reloader.check().await;
        assert!(
            matches!(outcome, ReloadOutcome::Reloaded { not_after } if not_after == Some(two.not_after)),
            "{outcome:?}"
        );
        assert!(trusted_by(&two.ca_pem, &base).await, "new pair serving");
        assert!(!trusted_by(&one.ca_pem, &base).await);

        // A truncated key or a missing file: kept, still serving the second pair.
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").expect("key");
        assert!(matches!(
            reloader.check().await,
            ReloadOutcome::Kept {
                error: ReloadError::Tls(_)
            }
        ));
        std::fs::remove_file(&key).expect("rm key");
        assert!(matches!(
            reloader.check().await,
            ReloadOutcome::Kept {
                error: ReloadError::Read { .. }
            }
        ));
        assert!(
            trusted_by(&two.ca_pem, &base).await,
            "second pair still serving"
        );
        let _ = handle.shutdown(Duration::ZERO).await;
    }

    #[tokio::test]
    async fn watch_applies_a_config_built_elsewhere_then_follows_changes() {
        tls::install_provider();
        let (one, two) = (bundle(), bundle());
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &one.cert_pem).expect("cert");
        std::fs::write(&key, &one.key_pem).expect("key");
        let config = RustlsConfig::from_config(Arc::new(
            tls::server_config(one.cert_pem.as_bytes(), one.key_pem.as_bytes()).expect("config"),
        ));
        let (tx, mut changes) = mpsc::unbounded_channel();
        let task = tokio::spawn(watch(
            config.clone(),
            cert.clone(),
            key.clone(),
            Duration::from_millis(20),
            move |o| {
                let _ = tx.send(matches!(o, ReloadOutcome::Reloaded { .. }));
            },
        ));
        let next = async |rx: &mut mpsc::UnboundedReceiver<bool>| {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a change within 5 s")
        };
        assert_eq!(next(&mut changes).await, Some(true), "first check applies");
        std::fs::write(&key, &two.key_pem).expect("key");
        std::fs::write(&cert, &two.cert_pem).expect("cert");
        // Possibly one rejected half-written pair, then the reload.
        let mut reloaded = next(&mut changes).await;
        if reloaded == Some(false) {
            reloaded = next(&mut changes).await;
        }
        assert_eq!(reloaded, Some(true));
        task.abort();
    }

    #[test]
    fn expiry_is_read_from_the_certificate() {
        tls::install_provider();
        let b = bundle(); // UTCTime (before 2050)
        assert_eq!(not_after_pem(b.cert_pem.as_bytes()), Some(b.not_after));
        // rcgen writes GeneralizedTime from 2050 on.
        let far = tls::generate(&["127.0.0.1".to_owned()], 365 * 40).expect("certificates");
        assert_eq!(not_after_pem(far.cert_pem.as_bytes()), Some(far.not_after));
        assert_eq!(asn1_time(0x17, b"991231235959Z"), Some(946_684_799));
        assert_eq!(asn1_time(0x18, b"20500101000000Z"), Some(2_524_608_000));
    }

    #[test]
    fn expiry_of_garbage_is_none_not_a_panic() {
        assert_eq!(not_after_pem(b"no pem here"), None);
        assert_eq!(not_after_der(&[]), None);
        assert_eq!(not_after_der(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(not_after_der(&[0x30, 0x03, 0x30, 0x01]), None);
        let b = bundle();
        let der = CertificateDer::from_pem_slice(b.cert_pem.as_bytes()).expect("der");
        for cut in 0..der.len() {
            let _ = not_after_der(&der[..cut]);
        }
        assert_eq!(asn1_time(0x17, b"99123123595Z"), None);
        assert_eq!(asn1_time(0x17, b"+9123123595 Z"), None);
        assert_eq!(asn1_time(0x18, b"20501301000000Z"), None);
    }
}
