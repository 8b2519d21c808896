//! The fallback: one bounded, shared, cached API lookup when a request names a release the
//! index does not have yet (or a Helm write arrives before the watch delivered its pending
//! revision).
//!
//! Everything else is answered from the index; this is the only API call on the request
//! path, and it is fenced in on every side:
//!
//! - **bounded**: the list calls (`owner=helm,name=<release>` in the release namespace,
//!   Secrets and, if enabled, ConfigMaps, in parallel) run under [`FallbackConfig::timeout`];
//!   at most [`FallbackConfig::max_concurrent`] releases are looked up at once;
//! - **shared**: one lookup in flight per release; concurrent requests await the same one
//!   (a `tokio::sync::OnceCell` per release — if the request running it is cancelled, the
//!   next waiter takes over);
//! - **cached**: a release that does not exist is not looked up again for
//!   [`FallbackConfig::negative_ttl`]; failures and "found, but no pending revision" are not
//!   retried for [`FallbackConfig::retry_after`]. A Helm write never trusts a cached
//!   "missing": a fresh install is missing until the moment its pending revision exists.
//!
//! What a lookup finds is decoded off the async workers and applied to the index through the
//! watch [`Feed`], attributed to the watch covering it so its next relist reconciles it.
//!
//! The API calls run as tasks on the runtime the fallback was made on — in `serve`, the
//! cluster runtime — not in the request's future: kube's client does its work (connecting,
//! TLS, reading and parsing the list) in the future that awaits it, and on the single
//! serving thread that would hold up every other request. The task is aborted with the
//! request's wait (its timeout or deadline).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::ListParams;
use kube::{Api, Client};
use tokio::sync::{OnceCell, Semaphore};
use tracing::{debug, info, warn};

use crate::helm::{RecordKind, ReleaseKey, Status};
use crate::metrics::LookupMetrics;
use crate::policy::{Facts, Operation, RecordFacts, Releases};
use crate::watch::{ConfigMapRecord, Feed, Record, ReleaseObject, SecretRecord, decode_object};

/// Bounds and cache lifetimes of the fallback.
#[derive(Clone, Debug)]
pub struct FallbackConfig {
    /// Give up on a lookup after this long (the request is then judged on the index alone).
    pub timeout: Duration,
    /// Don't look up a release that did not exist again for this long.
    pub negative_ttl: Duration,
    /// Don't repeat a failed lookup, or one that found no pending revision, for this long.
    pub retry_after: Duration,
    /// Also list ConfigMaps.
    pub configmaps: bool,
    /// Releases looked up at the same time, at most.
    pub max_concurrent: usize,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(300),
            negative_ttl: Duration::from_secs(30),
            retry_after: Duration::from_secs(1),
            configmaps: true,
            max_concurrent: 8,
        }
    }
}

/// What a request needs the index to have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The release at all (a workload naming it, a new release record needing history).
    Release,
    /// A `pending-*` revision (a write that claims to be Helm).
    Pending,
    /// The release with every revision read: the stale-value check of a `pending-upgrade`
    /// or `pending-rollback` record walks the history, and a cold start leaves superseded
    /// revisions unread (`watch::decode_listed`).
    History,
}

/// What [`Fallback::ensure`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupOutcome {
    /// The index already had what was wanted: no lookup.
    Known,
    /// Listed; this many revisions were applied to the index.
    Found { revisions: usize },
    /// Listed; the release has no records.
    Missing,
    /// Not looked up: the release was missing moments ago.
    CachedMissing,
    /// Not looked up: the same lookup found, or failed, moments ago.
    Recent,
    /// The lookup took longer than the timeout.
    TimedOut,
    /// The API refused or failed (message without content).
    Failed(String),
    /// The release name cannot be a Helm release name; not looked up.
    Invalid,
}

impl LookupOutcome {
    /// A stable metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Known => "known",
            Self::Found { .. } => "found",
            Self::Missing => "missing",
            Self::CachedMissing => "cached_missing",
            Self::Recent => "recent",
            Self::TimedOut => "timeout",
            Self::Failed(_) => "error",
            Self::Invalid => "invalid",
        }
    }
}

/// The fallback lookup, shared by all requests.
pub struct Fallback {
    client: Client,
    feed: Arc<Feed>,
    config: FallbackConfig,
    metrics: LookupMetrics,
    inflight: Mutex<HashMap<ReleaseKey, Arc<OnceCell<LookupOutcome>>>>,
    recent: Mutex<HashMap<ReleaseKey, (Instant, LookupOutcome)>>,
    permits: Semaphore,
    /// Where the API calls run: the runtime current when the fallback was made.
    runtime: Option<tokio::runtime::Handle>,
}

impl Fallback {
    pub fn new(
        client: Client,
        feed: Arc<Feed>,
        config: FallbackConfig,
        metrics: LookupMetrics,
    ) -> Self {
        let permits = Semaphore::new(config.max_concurrent.max(1));
        Self {
            client,
            feed,
            config,
            metrics,
            inflight: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
            permits,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Makes sure the index has what a request about `key` needs, looking it up at most
    /// once (shared, bounded, cached). Never fails: the outcome says what happened.
    pub async fn ensure(&self, key: &ReleaseKey, want: Want) -> LookupOutcome {
        if self.satisfied(key, want) {
            return LookupOutcome::Known;
        }
        if !is_release_name(&key.name) || !is_namespace_name(&key.namespace) {
            self.metrics.count("invalid");
            return LookupOutcome::Invalid;
        }
        if let Some(cached) = self.cached(key, want) {
            self.metrics.count(cached.label());
            return cached;
        }
        let cell = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            inflight.entry(key.clone()).or_default().clone()
        };
        let outcome = cell.get_or_init(|| self.lookup(key)).await.clone();
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if inflight.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(key);
            }
        }
        outcome
    }

    /// Whether the index already has what a request about `key` needs (no lookup to make).
    pub fn satisfied(&self, key: &ReleaseKey, want: Want) -> bool {
        let index = self.feed.index().read().unwrap_or_else(|e| e.into_inner());
        let view = index.release(key);
        match want {
            Want::Release => view.is_some(),
            Want::Pending => view.is_some_and(|v| v.pending.is_some()),
            Want::History => view.is_some() && !index.has_unread(key),
        }
    }

    fn cached(&self, key: &ReleaseKey, want: Want) -> Option<LookupOutcome> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let negative_ttl = self.config.negative_ttl;
        let retry_after = self.config.retry_after;
        // Expired entries go on every visit, so the map stays as small as the TTLs allow.
        if recent.len() > 1024 {
            recent.retain(|_, (at, _)| now.duration_since(*at) < negative_ttl.max(retry_after));
        }
        let (at, outcome) = recent.get(key)?;
        let age = now.duration_since(*at);
        match (outcome, want) {
            (LookupOutcome::Missing, Want::Release) if age < negative_ttl => {
                Some(LookupOutcome::CachedMissing)
            }
            (LookupOutcome::Missing, _) => None,
            _ if age < retry_after => Some(LookupOutcome::Recent),
            _ => None,
        }
    }

    /// The lookup itself; runs once per in-flight key.
    async fn lookup(&self, key: &ReleaseKey) -> LookupOutcome {
        let started = Instant::now();
        let outcome =
            match tokio::time::timeout(self.config.timeout, self.list_and_apply(key)).await {
                Ok(outcome) => outcome,
                Err(_) => LookupOutcome::TimedOut,
            };
        self.metrics.count(outcome.label());
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &outcome {
            LookupOutcome::Found { revisions } => {
                info!(release = %key, revisions, elapsed_ms, "fallback lookup found the release")
            }
            LookupOutcome::Failed(error) => {
                warn!(release = %key, %error, elapsed_ms, "fallback lookup failed")
            }
            other => debug!(release = %key, outcome = other.label(), elapsed_ms, "fallback lookup"),
        }
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), (Instant::now(), outcome.clone()));
        outcome
    }

    async fn list_and_apply(&self, key: &ReleaseKey) -> LookupOutcome {
        let Ok(_permit) = self.permits.acquire().await else {
            return LookupOutcome::Failed("lookups closed".into());
        };
        let selector = format!("owner=helm,name={}", key.name);
        // The feed's limits, so the watch and the fallback decode alike.
        let limits = self.feed.limits();
        let secrets = self.list::<SecretRecord>(&key.namespace, &selector, limits);
        let (secrets, config_maps) = if self.config.configmaps {
            let cms = self.list::<ConfigMapRecord>(&key.namespace, &selector, limits);
            let (s, c) = tokio::join!(secrets, cms);
            (s, Some(c))
        } else {
            (secrets.await, None)
        };
        let mut found = 0;
        for (kind, listed) in [
            (RecordKind::Secret, Some(secrets)),
            (RecordKind::ConfigMap, config_maps),
        ] {
            let Some(listed) = listed else { continue };
            let records = match listed {
                Ok(records) => records,
                Err(error) => return LookupOutcome::Failed(error),
            };
            let records: Vec<Record> = records
                .into_iter()
                .filter(|r| match r {
                    // Only records of this very release count (the label could lie).
                    Record::Revision(rev, _) => rev.release == *key,
                    _ => true,
                })
                .collect();
            found += records
                .iter()
                .filter(|r| matches!(r, Record::Revision(..)))
                .count();
            self.feed.apply_lookup(kind, &key.namespace, records);
        }
        if found == 0 {
            LookupOutcome::Missing
        } else {
            LookupOutcome::Found { revisions: found }
        }
    }

    /// [`list`] as a task of the fallback's runtime, aborted if this future is dropped.
    async fn list<K: ReleaseObject>(
        &self,
        namespace: &str,
        selector: &str,
        limits: crate::helm::DecodeLimits,
    ) -> Result<Vec<Record>, String> {
        let call = list::<K>(
            self.client.clone(),
            namespace.to_owned(),
            selector.to_owned(),
            limits,
        );
        match &self.runtime {
            Some(rt) => tokio_util::task::AbortOnDropHandle::new(rt.spawn(call))
                .await
                .unwrap_or_else(|e| Err(e.to_string())),
            None => call.await,
        }
    }
}

/// Lists and decodes (off the async workers) the release records of a selector.
async fn list<K: ReleaseObject>(
    client: Client,
    namespace: String,
    selector: String,
    limits: crate::helm::DecodeLimits,
) -> Result<Vec<Record>, String> {
    let api: Api<K> = Api::namespaced(client, &namespace);
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) => format!("{} {}", status.code, status.reason),
            other => other.to_string(),
        })?;
    let items = list.items;
    tokio::task::spawn_blocking(move || {
        items.iter().map(|obj| decode_object(obj, limits)).collect()
    })
    .await
    .map_err(|e| e.to_string())
}

/// Helm's release name rule (`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`,
/// at most 53 characters): anything else cannot name a release, and must not reach a label
/// selector.
pub fn is_release_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 53
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn is_namespace_name(ns: &str) -> bool {
    !ns.is_empty() && ns.len() <= 63 && !ns.contains('.') && is_release_name(ns)
}

/// What a request's facts say about the release it concerns: the pre-step of the request
/// handler, before the (pure) decision.
///
/// - a workload CREATE/UPDATE annotated `meta.helm.sh/release-name` → that release
///   ([`Want::Pending`] if its field manager is one of `helm_managers`);
/// - a release record being written → its release's history.
pub fn hint(facts: &Facts, helm_managers: &[String]) -> Option<(ReleaseKey, Want)> {
    if !matches!(facts.operation, Operation::Create | Operation::Update) {
        return None;
    }
    if let Some(record) = &facts.record {
        return match record {
            // Only these are checked against the history (`policy::record`).
            RecordFacts::Decoded(rev)
                if matches!(rev.status, Status::PendingUpgrade | Status::PendingRollback) =>
            {
                Some((rev.release.clone(), Want::History))
            }
            RecordFacts::Decoded(rev) => Some((rev.release.clone(), Want::Release)),
            RecordFacts::Undecodable(_) => None,
        };
    }
    facts.kind?;
    let key = facts.release_annotation.clone()?;
    let claims_helm = facts
        .writer
        .field_manager
        .as_ref()
        .is_some_and(|m| helm_managers.contains(m));
    let want = if claims_helm {
        Want::Pending
    } else {
        Want::Release
    };
    Some((key, want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission;
    use crate::policy::RELEASE_NAME;
    use serde_json::{Value, json};

    #[test]
    fn release_names_are_checked_before_reaching_a_selector() {
        assert!(is_release_name("db"));
        assert!(is_release_name("my-app.v2"));
        assert!(!is_release_name("x,owner!=helm"));
        assert!(!is_release_name("Upper"));
        assert!(!is_release_name("-x"));
        assert!(!is_release_name(&"a".repeat(54)));
    }

    #[test]
    fn hints() {
        use crate::demo::fixtures::record_review;
        use crate::policy::{Mode, Settings};
        let managers = vec!["helm".to_owned()];
        let facts = |body: Value| {
            let bytes = serde_json::to_vec(&body).expect("json");
            admission::prepare(&bytes, &Settings::new(Mode::Audit))
                .facts()
                .cloned()
        };
        let body = |kind: Value, fm: Option<&str>, meta: Value| {
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u", "kind": kind, "namespace": "db", "operation": "UPDATE",
                "object": {"metadata": meta}, "options": {"fieldManager": fm}}})
        };
        let sts = json!({"group": "apps", "version": "v1", "kind": "StatefulSet"});
        let annotated = json!({"annotations": {RELEASE_NAME: "db"}});
        let hint_of = |b: Value| facts(b).and_then(|f| hint(&f, &managers));
        assert_eq!(
            hint_of(body(sts.clone(), Some("kubectl-edit"), annotated.clone())),
            Some((ReleaseKey::new("db", "db"), Want::Release))
        );
        assert_eq!(
            hint_of(body(sts.clone(), Some("helm"), annotated)),
            Some((ReleaseKey::new("db", "db"), Want::Pending))
        );
        assert_eq!(hint_of(body(sts, None, json!({}))), None);
        let history = crate::demo::build::postgres_history("CANARY");
        let record = record_review("u", &history.last().secret(), "CREATE", "helm");
        assert_eq!(
            hint_of(record),
            Some((ReleaseKey::new("db", "db"), Want::Release))
        );
        // A pending upgrade is checked against the history: every revision must be read.
        let mut upgrading = history.clone();
        upgrading.begin_upgrade(
            &crate::demo::build::postgres_chart("14.1.0", "15.5.0"),
            json!({}),
            crate::values::coalesce::UpgradeValues::Default,
        );
        let record = record_review("u", &upgrading.last().secret(), "CREATE", "helm");
        assert_eq!(
            hint_of(record),
            Some((ReleaseKey::new("db", "db"), Want::History))
        );
    }
}
