//! AdmissionReviews shaped as the API server sends them, for the demo, tests and benches.
//!
//! An [`Edit`] describes one write to a workload — who, with which field manager, which
//! images before and after — and renders the `admission.k8s.io/v1` AdmissionReview a real
//! API server would post, including `options.fieldManager` and the `managedFields` entry the
//! server adds for the request before admission runs.

use serde_json::{Value, json};

use crate::policy::{ALLOW_DRIFT, RELEASE_NAME, RELEASE_NAMESPACE};
use crate::workload::WorkloadKind;

/// One write to a workload.
#[derive(Clone, Debug)]
pub struct Edit {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    /// `(namespace, name)` of the Helm release the object is annotated with.
    pub release: Option<(String, String)>,
    pub user: String,
    pub groups: Vec<String>,
    /// `options.fieldManager`; `None` for clients that send none (`kubectl rollout undo`).
    pub field_manager: Option<String>,
    /// The manager the API server records (`managedFields`) for this request.
    pub recorded_manager: Option<String>,
    /// `None` for CREATE.
    pub old_images: Option<Vec<(String, String)>>,
    pub new_images: Vec<(String, String)>,
    /// Extra annotations on the new object.
    pub annotations: Vec<(String, String)>,
    pub dry_run: bool,
}

impl Edit {
    /// `kubectl set image` of a Helm-managed workload.
    pub fn kubectl_set_image(
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
        release: &str,
        old: &[(&str, &str)],
        new: &[(&str, &str)],
    ) -> Self {
        let pairs = |l: &[(&str, &str)]| {
            l.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect()
        };
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            release: Some((namespace.into(), release.into())),
            user: "alice@example.com".into(),
            groups: vec!["system:authenticated".into()],
            field_manager: Some("kubectl-set".into()),
            recorded_manager: Some("kubectl-set".into()),
            old_images: Some(pairs(old)),
            new_images: pairs(new),
            annotations: Vec::new(),
            dry_run: false,
        }
    }

    /// The same write, sent by Helm (`fieldManager: helm`).
    pub fn by_helm(mut self) -> Self {
        self.field_manager = Some("helm".into());
        self.recorded_manager = Some("helm".into());
        self.user = "ci-deployer".into();
        self
    }

    /// Adds the break-glass annotation.
    pub fn with_break_glass(mut self, reason: &str) -> Self {
        self.annotations.push((ALLOW_DRIFT.into(), reason.into()));
        self
    }

    fn object(&self, images: &[(String, String)], managers: &[(&str, &str)], extra: bool) -> Value {
        let containers: Vec<Value> = images
            .iter()
            .map(|(n, i)| json!({"name": n, "image": i, "imagePullPolicy": "IfNotPresent"}))
            .collect();
        let pod = json!({"containers": containers, "restartPolicy": "Always"});
        let spec = match self.kind {
            WorkloadKind::Pod => pod,
            WorkloadKind::CronJob => {
                json!({"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": pod}}}})
            }
            _ => {
                json!({"replicas": 1, "template": {"metadata": {"labels": {"app": self.name}}, "spec": pod}})
            }
        };
        let mut annotations = serde_json::Map::new();
        if let Some((ns, rel)) = &self.release {
            annotations.insert(RELEASE_NAME.into(), json!(rel));
            annotations.insert(RELEASE_NAMESPACE.into(), json!(ns));
        }
        if extra {
            for (k, v) in &self.annotations {
                annotations.insert(k.clone(), json!(v));
            }
        }
        let managed: Vec<Value> = managers
            .iter()
            .map(|(m, t)| json!({"manager": m, "operation": "Update", "apiVersion": "apps/v1", "time": t, "fieldsType": "FieldsV1", "fieldsV1": {}}))
            .collect();
        let (group, version) = api_version(self.kind);
        json!({
            "apiVersion": if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") },
            "kind": self.kind.as_str(),
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "Helm"},
                "annotations": annotations,
                "managedFields": managed,
            },
            "spec": spec,
        })
    }

    /// The AdmissionReview the API server would send for this write.
    pub fn review(&self, uid: &str) -> Value {
        let base = [("helm", "2026-11-01T10:00:00Z")];
        let mut managers = base.to_vec();
        if let Some(m) = &self.recorded_manager {
            managers.push((m.as_str(), "2026-11-26T12:00:00Z"));
        }
        let object = self.object(&self.new_images, &managers, true);
        let old = self
            .old_images
            .as_ref()
            .map(|o| self.object(o, &base, false));
        let (group, version) = api_version(self.kind);
        let mut options = json!({"kind": if old.is_some() { "UpdateOptions" } else { "CreateOptions" }, "apiVersion": "meta.k8s.io/v1"});
        if let Some(fm) = &self.field_manager {
            options["fieldManager"] = json!(fm);
        }
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": group, "version": version, "kind": self.kind.as_str()},
                "resource": {"group": group, "version": version, "resource": self.kind.resource()},
                "requestKind": {"group": group, "version": version, "kind": self.kind.as_str()},
                "requestResource": {"group": group, "version": version, "resource": self.kind.resource()},
                "name": self.name,
                "namespace": self.namespace,
                "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
                "userInfo": {"username": self.user, "groups": self.groups},
                "object": object,
                "oldObject": old,
                "dryRun": self.dry_run,
                "options": options,
            }
        })
    }
}

fn api_version(kind: WorkloadKind) -> (&'static str, &'static str) {
    match kind {
        WorkloadKind::Pod => ("", "v1"),
        WorkloadKind::Job | WorkloadKind::CronJob => ("batch", "v1"),
        _ => ("apps", "v1"),
    }
}

/// The AdmissionReview for a write of a release record (Secret or ConfigMap object).
pub fn record_review(uid: &str, record: &Value, operation: &str, user: &str) -> Value {
    let kind = record["kind"].as_str().unwrap_or("Secret");
    let resource = if kind == "ConfigMap" {
        "configmaps"
    } else {
        "secrets"
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "name": record["metadata"]["name"],
            "namespace": record["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": record,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": if operation == "CREATE" { "CreateOptions" } else { "UpdateOptions" }, "apiVersion": "meta.k8s.io/v1"},
        }
    })
}
