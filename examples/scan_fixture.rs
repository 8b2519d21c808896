//! Writes a large `scan` input: N releases (3 revisions each, as Helm writes them, ~14 KiB
//! per Secret) and, per release, a Deployment, its ReplicaSet and a Pod (3N workloads), as
//! `kubectl get -o json` Lists split over files. One release in 20 runs a drifted image, one in
//! 10 carries a stale `image.tag` pin.
//!
//! ```sh
//! cargo run --release --example scan_fixture -- /tmp/scan 10000
//! /usr/bin/time -v target/release/helm-guard scan -A \
//!     --releases /tmp/scan/releases --objects /tmp/scan/objects --fail-on never >/dev/null
//! ```

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use helm_guard::demo::build::{Chart, History};
use helm_guard::values::coalesce::UpgradeValues;

/// Releases per release file; workloads per object file.
const PER_FILE: usize = 300;

/// Deterministic filler: hex text that compresses about as much as real templates and
/// config blobs do (a Helm record carries every template of its chart).
fn filler(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut s = String::with_capacity(len);
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{x:016x}"));
    }
    s.truncate(len);
    s
}

fn render(v: &Value) -> String {
    let s = |p: &str| {
        v.pointer(p)
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    let name = s("/fullname");
    format!(
        r#"---
# Source: app/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-config
data:
  app.conf: "{blob}"
---
# Source: app/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  ports:
    - name: http
      port: 80
      targetPort: 8080
---
# Source: app/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: app
    app.kubernetes.io/instance: {name}
spec:
  replicas: 1
  template:
    metadata:
      labels:
        app.kubernetes.io/name: app
    spec:
      initContainers:
        - name: migrate
          image: registry.example.com/team/migrate:{tag}
      containers:
        - name: app
          image: registry.example.com/team/app:{tag}
          ports:
            - containerPort: 8080
          env:
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {name}-db
                  key: password
        - name: metrics
          image: docker.io/prom/statsd-exporter:v0.27.1
"#,
        blob = s("/config/blob"),
        tag = s("/image/tag"),
    )
}

fn chart(version: &str, tag: &str, seed: u64) -> Chart {
    Chart {
        name: "app".into(),
        version: version.into(),
        app_version: tag.into(),
        values: json!({
            "image": {"repository": "registry.example.com/team/app", "tag": tag},
            "config": {"blob": filler(seed, 11500)},
            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
            "auth": {"password": ""},
        }),
        render,
    }
}

fn history(i: usize) -> History {
    let ns = format!("team-{:04}", i / 10);
    let name = format!("app-{i}");
    let mut values = json!({"fullname": name, "auth": {"password": format!("pw-{i}")}});
    if i.is_multiple_of(10) {
        values["image"] = json!({"tag": "1.0.0"}); // pinned at install: stale after upgrades
    }
    let seed = i as u64;
    let mut h = History::install(&name, &ns, &chart("1.0.0", "1.0.0", seed), values);
    for (v, tag) in [("1.1.0", "1.1.0"), ("1.2.0", "1.2.0")] {
        h.begin_upgrade(&chart(v, tag, seed), json!({}), UpgradeValues::Default);
        h.complete();
    }
    h
}

fn managed(manager: &str, time: &str, pod: bool, containers: &[&str]) -> Value {
    let mut list = serde_json::Map::new();
    for c in containers {
        list.insert(
            format!("k:{{\"name\":\"{c}\"}}"),
            json!({".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {},
                   "f:resources": {}, "f:terminationMessagePath": {}}),
        );
    }
    let spec = json!({"f:containers": list, "f:dnsPolicy": {}, "f:restartPolicy": {}});
    let fields = if pod {
        json!({"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app.kubernetes.io/name": {},
               "f:pod-template-hash": {}}, "f:ownerReferences": {}}, "f:spec": spec})
    } else {
        json!({"f:metadata": {"f:annotations": {".": {}, "f:meta.helm.sh/release-name": {},
               "f:meta.helm.sh/release-namespace": {}}, "f:labels": {}},
               "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {"f:spec": spec}}})
    };
    json!({"manager": manager, "operation": "Update", "apiVersion": "apps/v1", "time": time,
           "fieldsType": "FieldsV1", "fieldsV1": fields})
}

fn pod_spec(app: &str, tag: &str) -> Value {
    json!({
        "initContainers": [{"name": "migrate", "image": format!("registry.example.com/team/migrate:{tag}"),
                            "imagePullPolicy": "IfNotPresent", "resources": {}}],
        "containers": [
            {"name": "app", "image": app, "imagePullPolicy": "IfNotPresent",
             "ports": [{"containerPort": 8080, "protocol": "TCP"}],
             "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
             "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
             "terminationMessagePath": "/dev/termination-log"},
            {"name": "metrics", "image": "docker.io/prom/statsd-exporter:v0.27.1",
             "imagePullPolicy": "IfNotPresent", "resources": {}}
        ],
        "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
        "securityContext": {}, "terminationGracePeriodSeconds": 30,
    })
}

/// The Deployment, its ReplicaSet and one Pod of release `i`.
fn workloads(i: usize) -> [Value; 3] {
    let ns = format!("team-{:04}", i / 10);
    let name = format!("app-{i}");
    let tag = if i.is_multiple_of(10) {
        "1.0.0"
    } else {
        "1.2.0"
    };
    let drifted = i % 20 == 7;
    let app = if drifted {
        "registry.example.com/team/app:0.9.0".to_owned()
    } else {
        format!("registry.example.com/team/app:{tag}")
    };
    let hash = format!("{:010x}", i * 7919);
    let t0 = "2026-11-26T10:00:00Z";
    let mut deploy_managed = vec![managed("helm", t0, false, &["app", "metrics"])];
    if drifted {
        deploy_managed.push(managed(
            "kubectl-set",
            "2026-11-27T08:00:00Z",
            false,
            &["app"],
        ));
    }
    let meta = |kind_name: &str, extra: Value| {
        let mut m = json!({"name": kind_name, "namespace": ns, "uid": format!("uid-{kind_name}-{i}"),
            "resourceVersion": "123456", "generation": 3, "creationTimestamp": t0,
            "labels": {"app.kubernetes.io/name": "app", "app.kubernetes.io/instance": name,
                       "app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "app-1.2.0"}});
        if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        m
    };
    let template = json!({"metadata": {"labels": {"app.kubernetes.io/name": "app"}},
                          "spec": pod_spec(&app, tag)});
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(&name, json!({
            "annotations": {"deployment.kubernetes.io/revision": "3", "meta.helm.sh/release-name": name,
                            "meta.helm.sh/release-namespace": ns},
            "managedFields": deploy_managed})),
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "app"}},
                 "strategy": {"type": "RollingUpdate"}, "template": template},
        "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 3}});
    let rs_name = format!("{name}-{hash}");
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": meta(&rs_name, json!({
            "labels": {"app.kubernetes.io/name": "app", "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                 "uid": format!("uid-{name}-{i}"), "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [managed("kube-controller-manager", t0, false, &["app", "metrics"])]})),
        "spec": {"replicas": 1, "template": template},
        "status": {"replicas": 1}});
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": meta(&format!("{rs_name}-x7k2p"), json!({
            "labels": {"app.kubernetes.io/name": "app", "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                                 "uid": "u", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [managed("kube-controller-manager", t0, true, &["app", "metrics"])]})),
        "spec": pod_spec(&app, tag),
        "status": {"phase": "Running", "podIP": "10.0.0.1"}});
    [deploy, rs, pod]
}

fn write_list(path: &Path, items: Vec<Value>) -> std::io::Result<u64> {
    let text = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    let mut f = std::fs::File::create(path)?;
    f.write_all(text.as_bytes())?;
    Ok(text.len() as u64)
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/tmp/scan".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir.join("releases"))?;
    std::fs::create_dir_all(dir.join("objects"))?;
    let (mut secret_bytes, mut secrets, mut object_bytes) = (0u64, 0u64, 0u64);
    for (f, chunk) in (0..n).collect::<Vec<_>>().chunks(PER_FILE).enumerate() {
        let mut items = Vec::new();
        let mut objects = Vec::new();
        for &i in chunk {
            for r in &history(i).revisions {
                let s = r.secret();
                secret_bytes += s.to_string().len() as u64;
                secrets += 1;
                items.push(s);
            }
            objects.extend(workloads(i));
        }
        write_list(&dir.join(format!("releases/part-{f:04}.json")), items)?;
        object_bytes += write_list(&dir.join(format!("objects/part-{f:04}.json")), objects)?;
    }
    println!(
        "{n} releases: {secrets} Secrets, {:.1} KiB each on average; {} workloads, {:.1} MiB",
        secret_bytes as f64 / secrets.max(1) as f64 / 1024.0,
        n * 3,
        object_bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}
