//! OpenReports `Report`s written from the live inventory (`serve --reports openreports`): one
//! `Report` named `helm-guard` per namespace with findings, shaped by the same builder as
//! `scan --output openreports` ([`crate::scan::output::openreports`]).
//!
//! ```text
//!  inventory State ──namespaces changed──> every tick (debounce), if this replica holds the
//!                                          Lease: build the namespace's Report
//!                                            same content as last written → nothing
//!                                            changed → server-side apply (manager helm-guard)
//!                                            nothing to report → delete
//! ```
//!
//! One replica writes at a time: the holder of a `coordination.k8s.io/v1` Lease in its own
//! namespace ([`kube_lease_manager`]: acquire, renew, expiry). A replica that gains the Lease
//! forgets what it thinks was written and rewrites every namespace with findings, and deletes
//! the Reports it no longer has findings for (listed by the managed-by label), so a leader
//! change never leaves a stale Report behind. Content is compared without its timestamps, so
//! an unchanged namespace is never written again. Writes happen off the admission path.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::inventory::SharedState;
use crate::scan::output::{SOURCE, openreports};

/// The Lease the writers compete for, in their own namespace.
pub const LEASE: &str = "helm-guard-reports";
/// The `apiVersion` of the reports.
pub const API_VERSION: &str = "openreports.io/v1alpha1";

/// The `reports` resource of OpenReports.
pub fn resource() -> ApiResource {
    ApiResource {
        group: "openreports.io".into(),
        version: "v1alpha1".into(),
        api_version: API_VERSION.into(),
        kind: "Report".into(),
        plural: "reports".into(),
    }
}

/// Why reports cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportsError {
    /// The API does not serve `openreports.io/v1alpha1` `reports` (the CRDs are not installed).
    #[error("the OpenReports CRDs are not installed ({API_VERSION} reports not served)")]
    Absent,
    #[error("asking the API for {API_VERSION}: {0}")]
    Discovery(#[source] kube::Error),
    #[error("{verb} Report {namespace}/{SOURCE}: {source}")]
    Write {
        verb: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing existing Reports: {0}")]
    List(#[source] kube::Error),
    #[error("setting up the Lease: {0}")]
    Lease(String),
}

/// Whether the API serves OpenReports `reports` (discovery of the group version).
pub async fn check_available(client: &Client) -> Result<(), ReportsError> {
    match client.list_api_group_resources(API_VERSION).await {
        Ok(list) if list.resources.iter().any(|r| r.name == "reports") => Ok(()),
        Ok(_) => Err(ReportsError::Absent),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(ReportsError::Absent),
        Err(e) => Err(ReportsError::Discovery(e)),
    }
}

/// What one namespace's sync did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrote {
    Applied,
    Deleted,
    Unchanged,
}

/// Writes Reports and remembers what it wrote (content without timestamps).
pub struct Writer {
    client: Client,
    written: HashMap<String, Value>,
}

/// The report with its timestamps fixed: what "content changed" compares.
fn content(outcome: &crate::scan::Outcome) -> Option<Value> {
    single(openreports(outcome, UNIX_EPOCH))
}

fn single(list: Value) -> Option<Value> {
    match list {
        Value::Object(mut m) => match m.remove("items") {
            Some(Value::Array(mut items)) if !items.is_empty() => Some(items.swap_remove(0)),
            _ => None,
        },
        _ => None,
    }
}

impl Writer {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            written: HashMap::new(),
        }
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &resource())
    }

    /// Forgets what was written (a new Lease term: the previous holder may have written since).
    pub fn forget(&mut self) {
        self.written.clear();
    }

    /// Namespaces holding a Report this tool wrote.
    pub async fn existing(&self) -> Result<BTreeSet<String>, ReportsError> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource());
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/managed-by={SOURCE}"));
        let list = api.list(&lp).await.map_err(ReportsError::List)?;
        Ok(list
            .items
            .into_iter()
            .filter(|o| o.metadata.name.as_deref() == Some(SOURCE))
            .filter_map(|o| o.metadata.namespace)
            .collect())
    }

    /// Brings one namespace's Report to `outcome` (`None`: nothing to report, delete it).
    pub async fn sync(
        &mut self,
        namespace: &str,
        outcome: Option<&crate::scan::Outcome>,
        now: SystemTime,
    ) -> Result<Wrote, ReportsError> {
        let Some(outcome) = outcome else {
            self.written.remove(namespace);
            return match self
                .api(namespace)
                .delete(SOURCE, &DeleteParams::default())
                .await
            {
                Ok(_) => Ok(Wrote::Deleted),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(Wrote::Unchanged),
                Err(source) => Err(ReportsError::Write {
                    verb: "deleting",
                    namespace: namespace.to_owned(),
                    source,
                }),
            };
        };
        let Some(key) = content(outcome) else {
            return Ok(Wrote::Unchanged);
        };
        if self.written.get(namespace) == Some(&key) {
            return Ok(Wrote::Unchanged);
        }
        let Some(report) = single(openreports(outcome, now)) else {
            return Ok(Wrote::Unchanged);
        };
        let pp = PatchParams::apply(SOURCE).force();
        self.api(namespace)
            .patch(SOURCE, &pp, &Patch::Apply(&report))
            .await
            .map_err(|source| ReportsError::Write {
                verb: "applying",
                namespace: namespace.to_owned(),
                source,
            })?;
        self.written.insert(namespace.to_owned(), key);
        Ok(Wrote::Applied)
    }
}

/// Writes the inventory's Reports while `leader` says this replica holds the Lease, at most
/// once per namespace per `interval` (changes within it are coalesced).
pub async fn run(
    mut writer: Writer,
    state: SharedState,
    leader: watch::Receiver<bool>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading = false;
    let mut pending: BTreeSet<String> = BTreeSet::new();
    loop {
        tick.tick().await;
        pending.extend(state.lock().await.take_report_dirty());
        if !*leader.borrow() {
            if leading {
                info!("reports: no longer the Lease holder; not writing");
                leading = false;
            }
            continue;
        }
        if !leading {
            leading = true;
            writer.forget();
            match writer.existing().await {
                Ok(existing) => {
                    info!(
                        reports = existing.len(),
                        "reports: Lease held; reconciling every namespace"
                    );
                    pending.extend(existing);
                    pending.extend(state.lock().await.namespaces());
                }
                Err(error) => {
                    warn!(%error, "reports: Lease held but the Reports cannot be listed; retrying");
                    leading = false;
                    continue;
                }
            }
        }
        for namespace in std::mem::take(&mut pending) {
            let outcome = state.lock().await.outcome(&namespace);
            match writer
                .sync(&namespace, outcome.as_ref(), SystemTime::now())
                .await
            {
                Ok(wrote) => debug!(namespace, ?wrote, "report synced"),
                Err(error) => {
                    warn!(%error, "report not written; retrying next tick");
                    pending.insert(namespace);
                }
            }
        }
    }
}

/// Where the Lease lives and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The replica's own namespace.
    pub namespace: String,
    /// The replica's identity (its pod name).
    pub identity: String,
}

/// Checks that the API serves Reports, then competes for the Lease and writes while holding
/// it. An absent CRD or a Lease that cannot be set up is an error for the caller to log once:
/// admission and the gauges go on without reports.
pub async fn start(
    client: &Client,
    state: SharedState,
    lease: &LeaseConfig,
    interval: Duration,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ReportsError> {
    check_available(client).await?;
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .build()
        .await
        .map_err(|e| ReportsError::Lease(e.to_string()))?;
    let (leader, lease_task) = manager.watch().await;
    let lease_task = tokio::spawn(async move {
        match lease_task.await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => warn!(%error, "reports: the Lease task ended"),
            Err(error) => warn!(%error, "reports: the Lease task failed"),
        }
    });
    let writer = tokio::spawn(run(Writer::new(client.clone()), state, leader, interval));
    Ok(vec![lease_task, writer])
}
