//! The AdmissionReviews the load test sends: a Deployment-drift review of ~4 KiB (a
//! `kubectl set image` on a lean object) and one of ~32 KiB (the same edit on an object as
//! `kubectl apply` leaves it: last-applied-configuration, env, resources, probes,
//! `managedFields`), and for the soak a mix of workload kinds, drift and no drift, validate
//! and mutate, whose hand-set images are long (~60+ character) registry references.

use helm_guard::demo::fixtures::Edit;
use helm_guard::workload::WorkloadKind;
use serde_json::{Value, json};

use crate::client::Work;
use crate::support::fleet::{Change, Fleet, edit_for, set_image, workload_of};
use crate::support::review::realistic_review;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The drift review (answered `allowed: false` by helm-guard's enforcing webhook) padded
/// with container env to at least `target` bytes; `last_applied` adds kubectl's annotation.
pub fn drift(fleet: &Fleet, target: usize, rich: bool) -> Work {
    let mut edit = edit_for(fleet, 500, Change::Drift);
    if rich {
        // The component and its proxy sidecar: with all four containers the spec noise and
        // its copy in the annotation come to ~40 KiB.
        edit.new_images.truncate(2);
        if let Some(old) = &mut edit.old_images {
            old.truncate(2);
        }
    }
    let mut review = if rich {
        realistic_review(&edit, "load-drift", 7)
    } else {
        edit.review("load-drift")
    };
    if rich {
        add_last_applied(&mut review);
    }
    pad_env(&mut review, target);
    Work {
        path: "/validate/enforce",
        body: serde_json::to_vec(&review).unwrap_or_default(),
        allowed: false,
    }
}

/// kubectl apply's annotation: the applied object (without status or managed fields) as a
/// JSON string, on the object and the old object alike.
fn add_last_applied(review: &mut Value) {
    for which in ["object", "oldObject"] {
        let Some(obj) = review.pointer_mut(&format!("/request/{which}")) else {
            continue;
        };
        let applied = json!({
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": {
                "name": obj["metadata"]["name"],
                "namespace": obj["metadata"]["namespace"],
                "labels": obj["metadata"]["labels"],
            },
            "spec": obj["spec"],
        });
        if let Some(annotations) = obj
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.insert(LAST_APPLIED.into(), json!(applied.to_string()));
        }
    }
}

/// Adds the same env entries to the first container of the object and the old object until
/// the review is at least `target` bytes (env is not an image: the verdict stays).
fn pad_env(review: &mut Value, target: usize) {
    let mut k = 0;
    while serde_json::to_vec(review).map_or(usize::MAX, |b| b.len()) < target && k < 10_000 {
        for which in ["object", "oldObject"] {
            let Some(c) = review
                .pointer_mut(&format!("/request/{which}/spec/template/spec/containers/0"))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let env = c.entry("env").or_insert_with(|| json!([]));
            if let Some(env) = env.as_array_mut() {
                env.push(json!({"name": format!("FEATURE_FLAG_{k}"), "value": format!("enabled-{k:04}-{}", "x".repeat(16))}));
            }
        }
        k += 1;
    }
}

/// The soak's mix: up to 256 reviews over the fleet, Deployments, StatefulSets and
/// DaemonSets (those the fleet's charts render: with the default fleet, 171 reviews of
/// Deployments and StatefulSets), drift (the main container set to a long ECR reference by
/// hand) and no drift, `/validate/enforce` and `/mutate/audit`.
pub fn soak_mix(fleet: &Fleet) -> Vec<Work> {
    let kinds = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
    ];
    (0..256)
        .filter_map(|k| {
            let kind = kinds[k % kinds.len()];
            let change = if k % 2 == 0 {
                Change::Drift
            } else {
                Change::Unchanged
            };
            let validate = (k / 2) % 2 == 0;
            let edit = edit_of(fleet, k * 37, kind, change, k)?;
            let review = realistic_review(&edit, &format!("soak-{k:04}"), k as u64);
            Some(Work {
                path: if validate {
                    "/validate/enforce"
                } else {
                    "/mutate/audit"
                },
                body: serde_json::to_vec(&review).ok()?,
                allowed: !(validate && change == Change::Drift),
            })
        })
        .collect()
}

/// A `kubectl set image` of the first `kind` workload of a release at or after `i`.
fn edit_of(fleet: &Fleet, i: usize, kind: WorkloadKind, change: Change, k: usize) -> Option<Edit> {
    let n = fleet.deployed.len();
    let (i, w) = (i..i + n).find_map(|j| workload_of(fleet, j, kind).map(|w| (j, w)))?;
    let rev = fleet.deployed.get(i % n)?;
    let old: Vec<(String, String)> = w
        .containers
        .iter()
        .map(|c| (c.name.to_string(), c.image.as_str().to_owned()))
        .collect();
    let mut new = old.clone();
    let main = w.containers.iter().position(|c| !c.init);
    if change == Change::Drift
        && let Some(first) = main.and_then(|pos| new.get_mut(pos))
    {
        // ~85 characters: account, region, namespace and name, as ECR references run.
        first.1 = format!(
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/{}/{}:hotfix-{k:04}",
            w.key.namespace, w.key.name
        );
    }
    Some(set_image(w, rev, old, new))
}
