//! `helm-guard demo`: the seed story, replayed against the real HTTPS server.
//!
//! A PostgreSQL-like release is installed with `--set image.tag=11…`, upgraded to 15 by Helm,
//! rolled back to 11 by hand (denied in enforce, annotated in audit), rolled back again with
//! break-glass (allowed and recorded), and upgraded by Helm once more (allowed); finally a plain
//! `helm upgrade` re-applies the persisted tag, and the pending revision is flagged. Every step
//! goes through TLS to the server's routes, exactly as the API server would send it; the
//! release records are Helm-encoded and decoded by the same code the server uses for the
//! cluster. Each step checks what it expects; the demo exits non-zero if any step misbehaves.

pub mod build;
pub mod client;
pub mod fixtures;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use build::{History, postgres_chart};
use client::WebhookClient;
use fixtures::Edit;

use crate::helm::DecodeLimits;
use crate::helm::record::index_record;
use crate::policy::{Mode, Settings};
use crate::server::{self, AppState};
use crate::store::{Index, SharedIndex};
use crate::tls;
use crate::values::coalesce::UpgradeValues;
use crate::workload::WorkloadKind;

/// The password in the demo release's values. It must never appear in any response.
pub const DEMO_PASSWORD: &str = "demo-CANARY-s3cr3t";

const OLD: &str = "docker.io/bitnami/postgresql:11.22.0-debian-11-r4";
const NEW: &str = "docker.io/bitnami/postgresql:15.4.0-debian-11-r10";
const NEWER: &str = "docker.io/bitnami/postgresql:15.5.0-debian-11-r0";
const METRICS: &str = "docker.io/bitnami/postgres-exporter:0.15.0";

/// Demo failures.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Client(#[from] crate::demo::client::ClientError),
    #[error("loading the certificate: {0}")]
    Io(#[from] std::io::Error),
    #[error("release record: {0}")]
    Decode(String),
}

struct Story<'a, W: Write> {
    client: WebhookClient,
    out: &'a mut W,
    failures: usize,
    steps: usize,
    uid: u32,
}

struct Answer {
    status: u16,
    allowed: bool,
    message: String,
    warnings: Vec<String>,
    patch: Option<Value>,
    raw: String,
}

impl<W: Write> Story<'_, W> {
    async fn send(&mut self, path: &str, edit: &Edit) -> Result<Answer, DemoError> {
        self.uid += 1;
        let uid = format!("demo-{:04}", self.uid);
        self.send_review(path, &edit.review(&uid)).await
    }

    async fn send_review(&mut self, path: &str, review: &Value) -> Result<Answer, DemoError> {
        let uid = review["request"]["uid"].clone();
        let body = serde_json::to_vec(review).unwrap_or_default();
        let (status, bytes) = self.client.post_json(path, body).await?;
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let rsp = &v["response"];
        if rsp["uid"] != uid {
            self.failures += 1;
            let _ = writeln!(self.out, "   ✗ response uid does not match the request");
        }
        let patch = rsp["patch"]
            .as_str()
            .and_then(|p| STANDARD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok());
        Ok(Answer {
            status: status.as_u16(),
            allowed: rsp["allowed"].as_bool().unwrap_or(false),
            message: rsp["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            warnings: rsp["warnings"]
                .as_array()
                .map(|w| {
                    w.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            patch,
            raw,
        })
    }

    fn check(&mut self, ok: bool, what: &str) {
        self.steps += 1;
        if ok {
            let _ = writeln!(self.out, "   ✓ {what}");
        } else {
            self.failures += 1;
            let _ = writeln!(self.out, "   ✗ {what}");
        }
    }

    fn say(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
    }

    fn quote(&mut self, label: &str, text: &str) {
        let _ = writeln!(self.out, "     {label}: {text}");
    }

    fn no_canary(&mut self, a: &Answer) {
        if a.raw.contains(DEMO_PASSWORD) {
            self.failures += 1;
            let _ = writeln!(self.out, "   ✗ a response contains the release password");
        }
    }
}

fn apply(index: &SharedIndex, h: &History) -> Result<(), DemoError> {
    let mut guard = index.write().unwrap_or_else(|e| e.into_inner());
    for r in &h.revisions {
        match index_record(&r.secret(), DecodeLimits::default()) {
            Some(Ok(rev)) => guard.apply(rev),
            Some(Err(e)) => return Err(DemoError::Decode(e.to_string())),
            None => return Err(DemoError::Decode("not a release record".into())),
        }
    }
    Ok(())
}

fn sts_edit(old: &str, new: &str) -> Edit {
    Edit::kubectl_set_image(
        WorkloadKind::StatefulSet,
        "db",
        "db-postgresql",
        "db",
        &[("postgresql", old), ("metrics", METRICS)],
        &[("postgresql", new), ("metrics", METRICS)],
    )
}

/// Runs the demo, writing the transcript to `out`. Returns the number of failed checks.
pub async fn run(out: &mut impl Write) -> Result<usize, DemoError> {
    tls::install_provider();
    let bundle = tls::generate(&["127.0.0.1".to_owned(), "localhost".to_owned()], 1)?;
    let index: SharedIndex = Arc::new(RwLock::new(Index::default()));
    let state = AppState::new(
        index.clone(),
        Settings::new(Mode::Audit),
        server::ServeLimits::default(),
        Arc::new(AtomicBool::new(true)),
    );
    let config = RustlsConfig::from_config(Arc::new(tls::server_config(
        bundle.cert_pem.as_bytes(),
        bundle.key_pem.as_bytes(),
    )?));
    let running = server::start(state, config, SocketAddr::from(([127, 0, 0, 1], 0)), None).await?;
    let client = WebhookClient::new(
        bundle.ca_pem.as_bytes(),
        &format!("https://127.0.0.1:{}", running.addr.port()),
    )?;
    let mut story = Story {
        client,
        out,
        failures: 0,
        steps: 0,
        uid: 0,
    };
    story.say(&format!(
        "helm-guard demo: the seed story over HTTPS (https://{}, certificate made in memory)\n",
        running.addr
    ));

    // Revision 1: installed a while ago with an explicit tag; the password is in the values.
    let mut h = History::install(
        "db",
        "db",
        &postgres_chart("12.0.0", "11.22.0-debian-11-r4"),
        json!({"image": {"tag": "11.22.0-debian-11-r4"}, "auth": {"postgresPassword": DEMO_PASSWORD}}),
    );
    apply(&index, &h)?;
    story.say("release db/db rev 1: chart postgresql 12.0.0, --set image.tag=11.22.0-debian-11-r4 (deployed)");

    // 1. helm upgrade to 15: Helm writes rev 2 pending-upgrade, then patches the StatefulSet.
    h.begin_upgrade(
        &postgres_chart("14.0.0", "15.4.0-debian-11-r10"),
        json!({"image": {"tag": "15.4.0-debian-11-r10"}, "auth": {"postgresPassword": DEMO_PASSWORD}}),
        UpgradeValues::Default,
    );
    apply(&index, &h)?;
    story.say("\n1. helm upgrade db --version 14.0.0 --set image.tag=15.4.0-debian-11-r10");
    story.say("   Helm has written rev 2 (pending-upgrade) and patches statefulset/db-postgresql:");
    let a = story
        .send("/validate/enforce", &sts_edit(OLD, NEW).by_helm())
        .await?;
    story.no_canary(&a);
    story.check(
        a.status == 200 && a.allowed,
        "Helm's own write is allowed (enforce)",
    );
    h.complete();
    apply(&index, &h)?;
    story.say("   rev 2 is deployed: the chart now renders postgresql 15");

    // 2. Manual rollback to 11.
    story.say("\n2. kubectl set image statefulset/db-postgresql postgresql=…postgresql:11.22.0-debian-11-r4");
    let edit = sts_edit(NEW, OLD);
    let a = story.send("/validate/enforce", &edit).await?;
    story.no_canary(&a);
    story.check(
        !a.allowed && a.message.contains("helm upgrade"),
        "enforce: denied",
    );
    story.quote("message", &a.message);
    let a = story.send("/validate/audit", &edit).await?;
    story.no_canary(&a);
    story.check(
        a.allowed && !a.warnings.is_empty(),
        "audit: allowed, with a warning for kubectl",
    );
    for w in a.warnings.clone() {
        story.quote("Warning", &w);
    }
    let a = story.send("/mutate/audit", &edit).await?;
    story.no_canary(&a);
    let mark = a.patch.as_ref().map(|p| p.to_string()).unwrap_or_default();
    story.check(
        a.allowed && mark.contains("helm-guard.io"),
        "audit: the object is marked (helm-guard.io/drift)",
    );
    story.quote("patch", &mark);

    // 3. The same rollback, with break-glass.
    story.say("\n3. the same rollback with helm-guard.io/allow-drift=\"INC-2041: keep 11 until pg_upgrade\"");
    let edit = sts_edit(NEW, OLD).with_break_glass("INC-2041: keep 11 until pg_upgrade");
    let a = story.send("/validate/enforce", &edit).await?;
    story.no_canary(&a);
    story.check(
        a.allowed && !a.warnings.is_empty(),
        "enforce: allowed by break-glass, and said so",
    );
    for w in a.warnings.clone() {
        story.quote("Warning", &w);
    }
    let a = story.send("/mutate/enforce", &edit).await?;
    story.no_canary(&a);
    let mark = a.patch.as_ref().map(|p| p.to_string()).unwrap_or_default();
    story.check(
        mark.contains("INC-2041"),
        "enforce: the drift mark records the reason",
    );

    // 4. Another helm upgrade: rev 3 pending, Helm patches the workload.
    story.say("\n4. helm upgrade db --version 14.0.1 --set image.tag=15.5.0-debian-11-r0");
    h.begin_upgrade(
        &postgres_chart("14.0.1", "15.5.0-debian-11-r0"),
        json!({"image": {"tag": "15.5.0-debian-11-r0"}, "auth": {"postgresPassword": DEMO_PASSWORD}}),
        UpgradeValues::Default,
    );
    apply(&index, &h)?;
    let a = story
        .send("/validate/enforce", &sts_edit(OLD, NEWER).by_helm())
        .await?;
    story.no_canary(&a);
    story.check(
        a.allowed,
        "Helm's write during the upgrade (rev 3 pending) is allowed",
    );
    h.complete();
    apply(&index, &h)?;

    // 5. Someone claims to be Helm while no upgrade is running.
    story.say("\n5. kubectl --field-manager=helm set image … (no Helm operation in progress)");
    let a = story
        .send("/validate/enforce", &sts_edit(NEWER, OLD).by_helm())
        .await?;
    story.no_canary(&a);
    story.check(
        !a.allowed,
        "a Helm claim without a pending revision is judged as manual: denied",
    );

    // 6. The seed problem itself: a plain `helm upgrade` re-applies the persisted tag.
    story.say("\n6. helm upgrade db --version 15.0.0   (no --set: Helm silently reuses the values of rev 3)");
    h.begin_upgrade(
        &postgres_chart("15.0.0", "16.1.0-debian-12-r15"),
        json!({}),
        UpgradeValues::Default,
    );
    let pending = h.last().secret();
    story.say("   Helm writes rev 4 (pending-upgrade) before touching any workload:");
    let a = story
        .send_review(
            "/validate/enforce",
            &crate::demo::fixtures::record_review(
                "demo-record",
                &pending,
                "CREATE",
                "alice@example.com",
            ),
        )
        .await?;
    story.no_canary(&a);
    story.check(
        a.allowed
            && a.warnings
                .iter()
                .any(|w| w.contains("image.tag=15.5.0-debian-11-r0 pinned since revision 3")),
        "the stale persisted image.tag is pointed out, with the fix, on helm's stderr",
    );
    for w in a.warnings.clone() {
        story.quote("Warning", &w);
    }

    running.shutdown(Duration::from_secs(5)).await?;
    let failures = story.failures;
    let summary = if failures == 0 {
        format!("\nall {} checks behaved as expected", story.steps)
    } else {
        format!(
            "\n{failures} of {} checks did NOT behave as expected",
            story.steps
        )
    };
    story.say(&summary);
    Ok(failures)
}
