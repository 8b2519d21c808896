//! AdmissionReviews shaped like the API server's: spec noise and `managedFields` included.

use helm_guard::demo::fixtures::Edit;
use serde_json::{Map, Value, json};

use super::rng::Rng;

/// An AdmissionReview for `edit` as a real API server sends it: the fixture's review with
/// the spec noise of a real object (env, probes, resources, volumes) and a realistic
/// `managedFields` `fieldsV1` tree, on both the object and the old object.
pub fn realistic_review(edit: &Edit, uid: &str, seed: u64) -> Value {
    let mut review = edit.review(uid);
    let mut rng = Rng::new(seed);
    for which in ["object", "oldObject"] {
        let Some(obj) = review
            .pointer_mut(&format!("/request/{which}"))
            .filter(|o| o.is_object())
        else {
            continue;
        };
        if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
            spec["serviceAccountName"] = json!("default");
            spec["terminationGracePeriodSeconds"] = json!(45);
            spec["dnsPolicy"] = json!("ClusterFirst");
            spec["schedulerName"] = json!("default-scheduler");
            spec["securityContext"] =
                json!({"runAsNonRoot": true, "runAsUser": 1001, "fsGroup": 1001});
            spec["volumes"] = json!([
                {"name": "config", "configMap": {"name": "cfg", "defaultMode": 292}},
                {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                {"name": "varlog", "hostPath": {"path": "/var/log", "type": ""}},
            ]);
            if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
                for c in cs {
                    let env: Vec<Value> = (0..12)
                        .map(|k| json!({"name": format!("{}_{k}", rng.word().to_uppercase()), "value": rng.hex(16)}))
                        .collect();
                    c["env"] = json!(env);
                    c["ports"] =
                        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]);
                    c["resources"] = json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}});
                    c["livenessProbe"] = json!({"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"}, "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 3, "successThreshold": 1, "failureThreshold": 6});
                    c["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": "http", "scheme": "HTTP"}, "periodSeconds": 5, "timeoutSeconds": 2, "successThreshold": 1, "failureThreshold": 3});
                    c["volumeMounts"] = json!([{"name": "config", "mountPath": "/etc/app", "readOnly": true}, {"name": "tmp", "mountPath": "/tmp"}]);
                    c["terminationMessagePath"] = json!("/dev/termination-log");
                    c["terminationMessagePolicy"] = json!("File");
                    c["securityContext"] = json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}});
                }
            }
        }
        if let Some(spec) = obj.get_mut("spec") {
            spec["revisionHistoryLimit"] = json!(10);
            spec["progressDeadlineSeconds"] = json!(600);
            spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}});
        }
        obj["metadata"]["uid"] = json!("5f0c3a52-8d0e-4bb5-9a4e-2f1c0d7e6a91");
        obj["metadata"]["resourceVersion"] = json!("48213377");
        obj["metadata"]["generation"] = json!(7);
        obj["metadata"]["creationTimestamp"] = json!("2026-10-01T08:00:00Z");
        obj["status"] = json!({
            "observedGeneration": 7, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
            "conditions": [
                {"type": "Available", "status": "True", "lastUpdateTime": "2026-11-20T10:00:00Z", "lastTransitionTime": "2026-11-20T10:00:00Z", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "lastUpdateTime": "2026-11-20T10:00:00Z", "lastTransitionTime": "2026-10-01T08:00:00Z", "reason": "NewReplicaSetAvailable", "message": "ReplicaSet has successfully progressed."},
            ],
        });
        // The fieldsV1 tree of the `helm` manager: one key per field it set.
        if let Some(entries) = obj
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for e in entries {
                let mut containers = Map::new();
                for k in 0..3 {
                    containers.insert(
                        format!("k:{{\"name\":\"c{k}\"}}"),
                        json!({".": {}, "f:env": {".": {}, "k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}},
                               "f:image": {}, "f:imagePullPolicy": {}, "f:livenessProbe": {".": {}, "f:httpGet": {".": {}, "f:path": {}, "f:port": {}}},
                               "f:name": {}, "f:ports": {".": {}}, "f:resources": {".": {}, "f:limits": {}, "f:requests": {}},
                               "f:volumeMounts": {".": {}}}),
                    );
                }
                e["fieldsV1"] = json!({
                    "f:metadata": {"f:annotations": {".": {}, "f:meta.helm.sh/release-name": {}, "f:meta.helm.sh/release-namespace": {}}, "f:labels": {".": {}, "f:app.kubernetes.io/managed-by": {}}},
                    "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": containers, "f:volumes": {".": {}}}}},
                });
            }
        }
    }
    review
}
