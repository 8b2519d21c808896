//! Which rendered workload an object is judged against: the object itself when a release
//! renders it, else the controller that made it, followed up the owner chain
//! (Pod → ReplicaSet → Deployment by `pod-template-hash`, Pod → Job → CronJob by the scheduled
//! suffix, Pod → StatefulSet/DaemonSet directly).
//!
//! The object's own `meta.helm.sh/release-name` wins when that release renders it: a record
//! written in another namespace cannot take the object over by rendering the same name.

use super::{Owner, Releases};
use crate::helm::{ReleaseKey, WorkloadKey};
use crate::workload::WorkloadKind;

/// What an object says about itself that the owner chain needs.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub key: &'a WorkloadKey,
    /// `meta.helm.sh/release-name` / `-namespace` of the object.
    pub release_annotation: Option<&'a ReleaseKey>,
    /// Controller owner references.
    pub owners: &'a [Owner],
    /// The `pod-template-hash` label (Pods and ReplicaSets of a Deployment).
    pub pod_template_hash: Option<&'a str>,
}

/// Where an object's reference images come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub release: ReleaseKey,
    /// The rendered workload the object is judged against (itself, or its owner).
    pub reference: WorkloadKey,
}

/// Finds the release and rendered workload an object is judged against.
pub fn resolve(subject: Subject<'_>, releases: &impl Releases) -> Option<Resolved> {
    let key = subject.key;
    let direct = |k: &WorkloadKey| {
        releases.renderer_of(k).map(|release| Resolved {
            release,
            reference: k.clone(),
        })
    };
    if let Some(named) = subject.release_annotation
        && let Some(view) = releases.release(named)
        && [view.deployed, view.pending]
            .iter()
            .flatten()
            .any(|r| r.workload(key).is_some())
    {
        return Some(Resolved {
            release: named.clone(),
            reference: key.clone(),
        });
    }
    if let Some(r) = direct(key) {
        return Some(r);
    }
    let ns = &key.namespace;
    let of = |kind: WorkloadKind, name: &str| direct(&WorkloadKey::new(kind, ns, name));
    subject.owners.iter().find_map(|owner| {
        let name = owner.name.as_str();
        match owner.kind.as_str() {
            // Deployment `web` owns ReplicaSet `web-<pod-template-hash>`.
            "ReplicaSet" => of(WorkloadKind::ReplicaSet, name).or_else(|| {
                deployment_of(name, subject.pod_template_hash)
                    .and_then(|d| of(WorkloadKind::Deployment, d))
            }),
            "Deployment" => of(WorkloadKind::Deployment, name),
            "StatefulSet" => of(WorkloadKind::StatefulSet, name),
            "DaemonSet" => of(WorkloadKind::DaemonSet, name),
            "CronJob" => of(WorkloadKind::CronJob, name),
            // CronJob `backup` creates Job `backup-<scheduled minute>`.
            "Job" => of(WorkloadKind::Job, name)
                .or_else(|| cronjob_of(name).and_then(|c| of(WorkloadKind::CronJob, c))),
            _ => None,
        }
    })
}

/// The Deployment that owns ReplicaSet `replicaset`.
pub fn deployment_of<'a>(replicaset: &'a str, hash: Option<&str>) -> Option<&'a str> {
    match hash {
        Some(h) if !h.is_empty() => replicaset.strip_suffix(h)?.strip_suffix('-'),
        _ => replicaset.rsplit_once('-').map(|(d, _)| d),
    }
}

/// The CronJob that created Job `job` (`<cronjob>-<scheduled minute>`).
pub fn cronjob_of(job: &str) -> Option<&str> {
    let (name, suffix) = job.rsplit_once('-')?;
    (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())).then_some(name)
}
