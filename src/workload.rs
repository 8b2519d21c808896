//! The pod specs of every workload kind, read the same way from a chart's manifest (YAML) and
//! from an admission request (JSON).
//!
//! Only what the guard compares is deserialised: container names and images. Every other field
//! of a workload — and there are hundreds — is skipped by serde without being built, which is
//! what keeps indexing a large manifest cheap. The pod spec sits at a different depth per kind
//! (`spec` for a Pod, `spec.template.spec` for controllers, `spec.jobTemplate.spec.template.spec`
//! for a CronJob); one recursive [`Spec`] covers all of them.

use std::fmt;

use serde::Deserialize;

use crate::image::Image;

/// The kinds whose pod templates the guard watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
    Pod,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 7] = [
        Self::Deployment,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::ReplicaSet,
        Self::Job,
        Self::CronJob,
        Self::Pod,
    ];

    /// The workload kind for an API group and kind, or `None` for anything else (a CRD that
    /// happens to be called `Deployment` is not one of ours).
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Self> {
        let k = match kind {
            "Deployment" => Self::Deployment,
            "StatefulSet" => Self::StatefulSet,
            "DaemonSet" => Self::DaemonSet,
            "ReplicaSet" => Self::ReplicaSet,
            "Job" => Self::Job,
            "CronJob" => Self::CronJob,
            "Pod" => Self::Pod,
            _ => return None,
        };
        let group_ok = match k {
            // `extensions` served these kinds before `apps`; old charts still say so.
            Self::Deployment | Self::StatefulSet | Self::DaemonSet | Self::ReplicaSet => {
                group == "apps" || group == "extensions"
            }
            Self::Job | Self::CronJob => group == "batch",
            Self::Pod => group.is_empty(),
        };
        group_ok.then_some(k)
    }

    /// As [`Self::from_group_kind`], from a manifest's `apiVersion` (`apps/v1`, `v1`).
    pub fn from_api_version_kind(api_version: &str, kind: &str) -> Option<Self> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        Self::from_group_kind(group, kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::ReplicaSet => "ReplicaSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
            Self::Pod => "Pod",
        }
    }

    /// Lower-case plural resource name, as used in `kubectl` commands.
    pub fn resource(self) -> &'static str {
        match self {
            Self::Deployment => "deployments",
            Self::StatefulSet => "statefulsets",
            Self::DaemonSet => "daemonsets",
            Self::ReplicaSet => "replicasets",
            Self::Job => "jobs",
            Self::CronJob => "cronjobs",
            Self::Pod => "pods",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec` of any workload kind, or of a pod template. Recursive so that one type reads every
/// nesting: the outermost level that has `containers` is the pod spec.
///
/// `S` holds a container's name and image as read: owned `String`s from a manifest, text
/// borrowed from the body of an admission request (`admission::wire::Text`), which the
/// containers copy once.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "S: Deserialize<'de>"))]
pub struct Spec<S = String> {
    #[serde(default)]
    template: Option<Box<Template<S>>>,
    #[serde(default)]
    job_template: Option<Box<Template<S>>>,
    #[serde(default)]
    containers: Option<Vec<RawContainer<S>>>,
    #[serde(default)]
    init_containers: Option<Vec<RawContainer<S>>>,
}

impl<S> Default for Spec<S> {
    fn default() -> Self {
        Self {
            template: None,
            job_template: None,
            containers: None,
            init_containers: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de>"))]
struct Template<S> {
    #[serde(default)]
    spec: Option<Spec<S>>,
}

#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de>"))]
struct RawContainer<S> {
    #[serde(default)]
    name: Option<S>,
    #[serde(default)]
    image: Option<S>,
}

/// One container of a pod template and its image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: Box<str>,
    pub image: Image,
    /// An init container: same name space as containers in the API, reported separately.
    pub init: bool,
}

impl<S: AsRef<str>> Spec<S> {
    /// The containers (then init containers) of the pod spec this workload spec holds.
    /// Containers without a name or image are skipped: the API server rejects them anyway,
    /// and there is nothing to compare.
    pub fn containers(&self, kind: WorkloadKind) -> Vec<Container> {
        self.collect(kind, &[], Image::new)
    }

    /// [`Self::containers`] of a request's object, taking the parsed image of a `known`
    /// container written the same way instead of parsing it again (an edit's old object
    /// mostly repeats the new one), and the others through the per-thread cache of recent
    /// references ([`Image::recent`]).
    pub fn containers_reusing(&self, kind: WorkloadKind, known: &[Container]) -> Vec<Container> {
        self.collect(kind, known, Image::recent)
    }

    fn collect(
        &self,
        kind: WorkloadKind,
        known: &[Container],
        parse: fn(&str) -> Image,
    ) -> Vec<Container> {
        let pod = match kind {
            WorkloadKind::Pod => Some(self),
            WorkloadKind::CronJob => self
                .job_template
                .as_ref()
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref()),
            _ => self.template.as_ref().and_then(|t| t.spec.as_ref()),
        };
        let Some(pod) = pod else { return Vec::new() };
        // Sized once: grown push by push, a five-container pod cost two allocations and a
        // copy on every request. Capped, as entries without a name or image are counted but
        // skipped, and a body can hold many of them.
        let count = [&pod.containers, &pod.init_containers]
            .iter()
            .map(|l| l.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        let mut out = Vec::with_capacity(count.min(32));
        for (list, init) in [(&pod.containers, false), (&pod.init_containers, true)] {
            for c in list.iter().flatten() {
                if let (Some(name), Some(image)) = (&c.name, &c.image) {
                    let image = image.as_ref();
                    let image = known
                        .iter()
                        .find(|k| k.image.as_str() == image.trim())
                        .map_or_else(|| parse(image), |k| k.image.clone());
                    out.push(Container {
                        name: name.as_ref().into(),
                        image,
                        init,
                    });
                }
            }
        }
        out
    }
}

/// Finds a container by name in a list (containers and init containers share one name space).
pub fn find<'a>(containers: &'a [Container], name: &str) -> Option<&'a Container> {
    containers.iter().find(|c| &*c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        Spec::deserialize(&json).expect("spec")
    }

    #[test]
    fn pod_spec_depth_per_kind() {
        let pod = serde_json::json!({"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}],
            "initContainers": [{"name": "i", "image": "y:1"}]}}});
        let cases = [
            (WorkloadKind::Deployment, pod.clone(), 2),
            (WorkloadKind::StatefulSet, pod.clone(), 2),
            (WorkloadKind::DaemonSet, pod.clone(), 2),
            (WorkloadKind::ReplicaSet, pod.clone(), 2),
            (WorkloadKind::Job, pod.clone(), 2),
            (
                WorkloadKind::CronJob,
                serde_json::json!({"jobTemplate": {"spec": pod.clone()}}),
                2,
            ),
            (
                WorkloadKind::Pod,
                serde_json::json!({"containers": [{"name": "a", "image": "x:1"}]}),
                1,
            ),
            // A CronJob read as a Deployment finds no template: nothing, not a panic.
            (
                WorkloadKind::Deployment,
                serde_json::json!({"jobTemplate": {}}),
                0,
            ),
            (WorkloadKind::Pod, serde_json::json!({}), 0),
        ];
        for (kind, json, want) in cases {
            let got = spec(json).containers(kind);
            assert_eq!(got.len(), want, "{kind}");
        }
        let got = spec(pod).containers(WorkloadKind::Deployment);
        assert_eq!(&*got[0].name, "a");
        assert!(!got[0].init);
        assert_eq!(got[1].image.as_str(), "y:1");
        assert!(got[1].init);
    }

    #[test]
    fn skips_nameless_or_imageless_containers() {
        let s = spec(
            serde_json::json!({"containers": [{"name": "a"}, {"image": "x"}, {"name": "b", "image": "y"}]}),
        );
        let got = s.containers(WorkloadKind::Pod);
        assert_eq!(got.len(), 1);
        assert_eq!(&*got[0].name, "b");
    }

    #[test]
    fn kinds_need_their_group() {
        assert_eq!(
            WorkloadKind::from_api_version_kind("apps/v1", "Deployment"),
            Some(WorkloadKind::Deployment)
        );
        assert_eq!(
            WorkloadKind::from_api_version_kind("v1", "Pod"),
            Some(WorkloadKind::Pod)
        );
        assert_eq!(
            WorkloadKind::from_api_version_kind("batch/v1", "CronJob"),
            Some(WorkloadKind::CronJob)
        );
        assert_eq!(
            WorkloadKind::from_api_version_kind("example.com/v1", "Deployment"),
            None
        );
        assert_eq!(WorkloadKind::from_api_version_kind("v1", "Service"), None);
        assert_eq!(WorkloadKind::from_group_kind("apps", "Pod"), None);
    }
}
