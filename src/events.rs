//! Kubernetes Events for denials, audited drift and break-glass use: queued by the request
//! handler after the decision, sent by one background task, never on the response path.
//!
//! ```text
//! handler ──try_send──> bounded queue ──> drain task ──Recorder::publish──> events.k8s.io/v1
//!  (never waits; a full    (capacity)      (per-event timeout;  (kube aggregates repeats of
//!   queue drops, counted)                   sent/failed counted)  one reason on one object
//!                                                                  into a series: PATCH)
//! ```
//!
//! The decision ([`crate::policy::decide`]) already says which Events to send
//! ([`EventIntent`]: a reason, a short note made only of names and image references, and
//! the severity). Nothing is queued for dry-run requests: the webhooks declare
//! `sideEffects: NoneOnDryRun`.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span, warn};

use crate::helm::WorkloadKey;
use crate::metrics::EventMetrics;
use crate::policy::EventIntent;

/// Queue capacity by default.
pub const DEFAULT_CAPACITY: usize = 1024;

/// How long one Event may take to send before it is counted as failed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// One Event waiting to be sent.
#[derive(Clone, Debug)]
pub struct Job {
    pub regarding: ObjectReference,
    pub reason: &'static str,
    pub note: String,
    pub warning: bool,
}

/// The sending side of the Event queue; cheap to clone.
#[derive(Clone, Debug)]
pub struct EventQueue {
    tx: mpsc::Sender<Job>,
    metrics: EventMetrics,
}

impl EventQueue {
    /// Starts the drain task sending through `client` as `reporter`.
    pub fn spawn(
        client: Client,
        reporter: Reporter,
        capacity: usize,
        metrics: EventMetrics,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Job>(capacity.max(1));
        let recorder = Recorder::new(client, reporter);
        let task_metrics = metrics.clone();
        let task = tokio::spawn(
            async move {
                while let Some(job) = rx.recv().await {
                    let event = Event {
                        type_: if job.warning {
                            EventType::Warning
                        } else {
                            EventType::Normal
                        },
                        reason: job.reason.to_owned(),
                        note: Some(job.note),
                        action: "Admission".to_owned(),
                        secondary: None,
                    };
                    let sent = tokio::time::timeout(
                        SEND_TIMEOUT,
                        recorder.publish(&event, &job.regarding),
                    )
                    .await;
                    match sent {
                        Ok(Ok(())) => {
                            debug!(reason = job.reason, "event sent");
                            task_metrics.count("sent");
                        }
                        Ok(Err(error)) => {
                            warn!(reason = job.reason, %error, "event not sent");
                            task_metrics.count("failed");
                        }
                        Err(_) => {
                            warn!(reason = job.reason, "event send timed out");
                            task_metrics.count("failed");
                        }
                    }
                }
            }
            .instrument(info_span!("events")),
        );
        (Self { tx, metrics }, task)
    }

    /// A queue whose jobs go to `tx` (tests, or another sender).
    pub fn from_sender(tx: mpsc::Sender<Job>, metrics: EventMetrics) -> Self {
        Self { tx, metrics }
    }

    /// Queues one Event per intent on `object` (or on the intent's own target). Never
    /// waits: a full queue drops the Event and counts it. Nothing for a dry run. Returns
    /// how many were queued.
    pub fn emit(&self, object: &ObjectReference, intents: &[EventIntent], dry_run: bool) -> usize {
        if dry_run {
            return 0;
        }
        let mut queued = 0;
        for intent in intents {
            let regarding = intent
                .target
                .as_ref()
                .map_or_else(|| object.clone(), |t| workload_ref(t, None));
            let job = Job {
                regarding,
                reason: intent.reason,
                note: clip_note(&intent.note),
                warning: intent.warning,
            };
            match self.tx.try_send(job) {
                Ok(()) => queued += 1,
                Err(_) => {
                    self.metrics.count("dropped");
                }
            }
        }
        queued
    }
}

/// The API's limit on `note` is 1 kB; ours are far shorter, this is a guard.
fn clip_note(note: &str) -> String {
    crate::text::clip(note, 1000).to_owned()
}

fn api_version(kind: &str) -> &'static str {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => "apps/v1",
        "Job" | "CronJob" => "batch/v1",
        _ => "v1",
    }
}

/// A reference to a workload.
pub fn workload_ref(key: &WorkloadKey, uid: Option<String>) -> ObjectReference {
    object_ref(key.kind.as_str(), &key.namespace, &key.name, uid)
}

/// A reference to an object of `kind` (workload kinds, Secret, ConfigMap).
pub fn object_ref(kind: &str, namespace: &str, name: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version(kind).to_owned()),
        kind: Some(kind.to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        uid,
        ..ObjectReference::default()
    }
}

/// The reference of the object an admission request is about: its `group/version`, kind,
/// namespace, name, and the uid of the stored object (UPDATE) if known.
pub fn request_ref(
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    uid: Option<String>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(kind.to_owned()),
        namespace: Some(namespace.to_owned()).filter(|n| !n.is_empty()),
        name: Some(name.to_owned()),
        uid,
        ..ObjectReference::default()
    }
}

/// The reporter of helm-guard's Events: controller `helm-guard`, instance the pod name
/// (`--pod-name`, from the downward API) or the host name.
pub fn reporter(pod_name: Option<&str>) -> Reporter {
    let instance = pod_name.map(str::to_owned).or_else(|| {
        // kube's `From<&str>` falls back to the host name.
        Reporter::from("helm-guard").instance
    });
    Reporter {
        controller: "helm-guard".into(),
        instance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn intent(reason: &'static str) -> EventIntent {
        EventIntent {
            reason,
            note: "db-postgresql: runs postgres:11, chart renders postgres:15".into(),
            warning: true,
            target: None,
        }
    }

    #[tokio::test]
    async fn dry_runs_queue_nothing_and_a_full_queue_drops() {
        let (tx, mut rx) = mpsc::channel(1);
        let q = EventQueue::from_sender(tx, Metrics::unregistered().events);
        let obj = object_ref("StatefulSet", "db", "db-postgresql", None);
        assert_eq!(q.emit(&obj, &[intent("ImageDrift")], true), 0);
        assert_eq!(
            q.emit(&obj, &[intent("ImageDrift"), intent("Again")], false),
            1
        );
        let job = rx.recv().await.expect("queued");
        assert_eq!(job.reason, "ImageDrift");
        assert_eq!(job.regarding.api_version.as_deref(), Some("apps/v1"));
    }

    #[test]
    fn reference_of_a_request() {
        let r = request_ref("apps/v1", "Deployment", "web", "api", Some("1234".into()));
        assert_eq!(r.api_version.as_deref(), Some("apps/v1"));
        assert_eq!(r.uid.as_deref(), Some("1234"));
        assert_eq!(r.name.as_deref(), Some("api"));
        assert_eq!(
            request_ref("v1", "Namespace", "", "x", None).namespace,
            None
        );
    }
}
