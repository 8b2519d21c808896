//! A chart whose manifest looks like a real application chart: many documents of mixed kinds,
//! workloads with several containers and the usual spec noise, image references in the
//! forms charts really use.

use std::fmt::Write as _;

use helm_guard::demo::build::Chart;
use serde_json::{Map, Value, json};

use super::rng::Rng;

const CHART: &str = "acme-platform";
const CHART_VERSION: &str = "4.12.3";

/// Workload kinds rotated through the components of the chart.
const KINDS: [&str; 5] = [
    "Deployment",
    "StatefulSet",
    "Deployment",
    "CronJob",
    "DaemonSet",
];

fn component_values(i: usize, rng: &mut Rng) -> Value {
    let kind = KINDS[i % KINDS.len()];
    let name = format!("{}-{i}", rng.word());
    // Image references in the forms charts really use, to exercise the reference parser.
    let image = match i % 5 {
        0 => {
            json!({"registry": "ghcr.io", "repository": format!("acme/{name}"), "tag": format!("v1.{i}.3")})
        }
        1 => {
            json!({"registry": "docker.io", "repository": format!("bitnami/{name}"), "tag": format!("15.{i}.0-debian-12-r{}", i % 7)})
        }
        2 => {
            json!({"registry": "registry.internal.example.com:5000", "repository": format!("platform/{name}"), "tag": "", "digest": format!("sha256:{}", rng.hex(64))})
        }
        3 => json!({"registry": "", "repository": name.clone(), "tag": format!("2.{i}")}),
        _ => {
            json!({"registry": "quay.io", "repository": format!("acme/team/{name}"), "tag": format!("v{i}.0.0-rc.1"), "digest": format!("sha256:{}", rng.hex(64))})
        }
    };
    let mut env = Map::new();
    for k in 0..(6 + rng.below(6)) {
        env.insert(
            format!("{}_{}_{k}", rng.word().to_uppercase(), i),
            json!(format!("{}-{}", rng.word(), rng.hex(8))),
        );
    }
    json!({
        "kind": kind,
        "name": name,
        "replicas": 1 + (i % 4),
        "image": image,
        "port": 8000 + (i % 100),
        "env": env,
        "resources": {
            "requests": {"cpu": format!("{}m", 100 + 50 * (i % 8)), "memory": format!("{}Mi", 128 << (i % 4))},
            "limits": {"cpu": format!("{}m", 500 + 250 * (i % 4)), "memory": format!("{}Mi", 256 << (i % 4))},
        },
        "configBytes": 1200 + rng.below(2400),
        "schedule": format!("{} {} * * *", i % 60, i % 24),
        "seed": rng.next() >> 11,
    })
}

/// A chart whose manifest renders to about `target_bytes` (at least one component).
pub fn app_chart(target_bytes: usize) -> Chart {
    sized_chart(target_bytes, render_app)
}

/// The same chart with only its workload documents rendered (Deployments, StatefulSets,
/// DaemonSets, CronJobs): every document is parsed, the worst case for indexing.
#[allow(dead_code)] // used by the guard bench only, not the load example
pub fn workload_chart(target_bytes: usize) -> Chart {
    sized_chart(target_bytes, render_workloads)
}

fn sized_chart(target_bytes: usize, render: fn(&Value) -> String) -> Chart {
    let chart_with = |n: usize| {
        let mut rng = Rng::new(0x5eed);
        let mut components = Map::new();
        for i in 0..n {
            components.insert(format!("c{i:04}"), component_values(i, &mut rng));
        }
        Chart {
            name: CHART.into(),
            version: CHART_VERSION.into(),
            app_version: "4.12.3".into(),
            values: json!({
                "fullnameOverride": "app",
                "global": {"imagePullSecrets": ["regcred"], "storageClass": "gp3"},
                "sidecars": {
                    "proxy": {"image": "docker.io/envoyproxy/envoy:v1.31.2"},
                    "logs": {"image": "docker.io/bitnami/fluent-bit:3.1.9-debian-12-r0"},
                    "metrics": {"image": "quay.io/prometheus/statsd-exporter:v0.27.1"},
                    "init": {"image": "busybox:1.36.1"},
                },
                "auth": {"password": "CANARY-chart-default"},
                "components": components,
            }),
            render,
        }
    };
    // Components are ~5–8 KiB each; find the smallest count that reaches the target.
    let mut n = 1;
    loop {
        let chart = chart_with(n);
        let len = (chart.render)(&chart.values).len();
        if len >= target_bytes {
            return chart;
        }
        let per = len / n;
        n = (n + (target_bytes - len).div_ceil(per.max(1)) / 2).max(n + 1);
        if n > 10_000 {
            return chart;
        }
    }
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

fn image_of(c: &Value) -> String {
    let reg = s(c, "/image/registry");
    let repo = s(c, "/image/repository");
    let tag = s(c, "/image/tag");
    let digest = s(c, "/image/digest");
    let mut out = String::new();
    if !reg.is_empty() {
        out.push_str(reg);
        out.push('/');
    }
    out.push_str(repo);
    if !tag.is_empty() {
        out.push(':');
        out.push_str(tag);
    }
    if !digest.is_empty() {
        out.push('@');
        out.push_str(digest);
    }
    out
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    let mut out = String::with_capacity(text.len() + text.lines().count() * n);
    for line in text.lines() {
        if !line.is_empty() {
            out.push_str(&pad);
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The chart's templates: for each component a workload plus its Service, ConfigMap, Secret,
/// ServiceAccount, Role, RoleBinding, PodDisruptionBudget and (Deployments) an HPA.
fn render_app(v: &Value) -> String {
    let full = s(v, "/fullnameOverride");
    let mut out = String::new();
    let empty = Map::new();
    let components = v
        .pointer("/components")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let _ = write!(
        out,
        "---\n# Source: {CHART}/templates/rbac/clusterrole.yaml\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {full}-reader\n  labels:\n    app.kubernetes.io/instance: {full}\n    app.kubernetes.io/managed-by: Helm\nrules:\n  - apiGroups: [\"\"]\n    resources: [\"pods\", \"endpoints\", \"services\", \"configmaps\"]\n    verbs: [\"get\", \"list\", \"watch\"]\n  - apiGroups: [\"apps\"]\n    resources: [\"deployments\", \"statefulsets\"]\n    verbs: [\"get\", \"list\", \"watch\"]\n"
    );
    for (key, c) in components {
        render_component(&mut out, v, full, key, c);
    }
    out
}

/// [`render_app`] without its non-workload documents.
#[allow(dead_code)] // used by the guard bench only, not the load example
fn render_workloads(v: &Value) -> String {
    let all = render_app(v);
    let mut out = String::with_capacity(all.len() / 2);
    for doc in all.split("---\n").filter(|d| !d.is_empty()) {
        let workload = doc.lines().any(|l| {
            matches!(
                l,
                "kind: Deployment" | "kind: StatefulSet" | "kind: DaemonSet" | "kind: CronJob"
            )
        });
        if workload {
            out.push_str("---\n");
            out.push_str(doc);
        }
    }
    out
}

fn labels(full: &str, comp: &str, pad: usize) -> String {
    indent(
        &format!(
            "app.kubernetes.io/name: {CHART}\napp.kubernetes.io/instance: {full}\napp.kubernetes.io/component: {comp}\n"
        ),
        pad,
    )
}

fn render_component(out: &mut String, v: &Value, full: &str, key: &str, c: &Value) {
    let comp = s(c, "/name");
    let kind = s(c, "/kind");
    let name = format!("{full}-{comp}");
    let seed = c.pointer("/seed").and_then(Value::as_u64).unwrap_or(1);
    let mut rng = Rng::new(seed);
    let port = c.pointer("/port").and_then(Value::as_u64).unwrap_or(8080);
    let replicas = c.pointer("/replicas").and_then(Value::as_u64).unwrap_or(1);
    let meta_labels = format!(
        "{}    app.kubernetes.io/managed-by: Helm\n    helm.sh/chart: {CHART}-{CHART_VERSION}\n",
        labels(full, comp, 4).trim_start()
    );
    let src = |file: &str| format!("---\n# Source: {CHART}/templates/{key}/{file}\n");

    // ServiceAccount, Role, RoleBinding.
    let _ = write!(
        out,
        "{}apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  labels:\n    {meta_labels}automountServiceAccountToken: false\n",
        src("serviceaccount.yaml")
    );
    let _ = write!(
        out,
        "{}apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: {name}\n  labels:\n    {meta_labels}rules:\n  - apiGroups: [\"\"]\n    resources: [\"configmaps\", \"secrets\"]\n    resourceNames: [\"{name}\", \"{name}-env\"]\n    verbs: [\"get\", \"watch\"]\n  - apiGroups: [\"coordination.k8s.io\"]\n    resources: [\"leases\"]\n    verbs: [\"get\", \"create\", \"update\"]\n",
        src("role.yaml")
    );
    let _ = write!(
        out,
        "{}apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {name}\n  labels:\n    {meta_labels}roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: {name}\nsubjects:\n  - kind: ServiceAccount\n    name: {name}\n",
        src("rolebinding.yaml")
    );

    // Secret with base64 data (chart-generated credentials).
    let _ = write!(
        out,
        "{}apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-env\n  labels:\n    {meta_labels}type: Opaque\ndata:\n",
        src("secret.yaml")
    );
    for k in 0..4 {
        let _ = writeln!(
            out,
            "  {}-{k}: \"{}\"",
            rng.word(),
            base64_like(&mut rng, 24 + 8 * k)
        );
    }

    // ConfigMap with a large properties file and a JSON blob.
    let config_bytes = c
        .pointer("/configBytes")
        .and_then(Value::as_u64)
        .unwrap_or(1024) as usize;
    let _ = write!(
        out,
        "{}apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels:\n    {meta_labels}data:\n  application.properties: |\n",
        src("configmap.yaml")
    );
    let start = out.len();
    while out.len() - start < config_bytes * 3 / 4 {
        let _ = writeln!(
            out,
            "    {}.{}.{}={}-{}",
            rng.word(),
            rng.word(),
            rng.below(100),
            rng.word(),
            rng.hex(12)
        );
    }
    out.push_str("  routes.json: |\n    {\"routes\": [\n");
    let start = out.len();
    while out.len() - start < config_bytes / 4 {
        let _ = writeln!(
            out,
            "      {{\"path\": \"/{}/{}\", \"upstream\": \"{}.svc:{}\", \"timeoutMs\": {}}},",
            rng.word(),
            rng.word(),
            rng.word(),
            8000 + rng.below(1000),
            100 * (1 + rng.below(50))
        );
    }
    out.push_str("      {\"path\": \"/\", \"upstream\": \"default\"}\n    ]}\n");

    if kind != "CronJob" {
        let _ = write!(
            out,
            "{}apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  labels:\n    {meta_labels}spec:\n  type: ClusterIP\n  ports:\n    - name: http\n      port: 80\n      targetPort: http\n      protocol: TCP\n    - name: metrics\n      port: 9102\n      targetPort: metrics\n  selector:\n{}",
            src("service.yaml"),
            labels(full, comp, 4)
        );
        let _ = write!(
            out,
            "{}apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {name}\n  labels:\n    {meta_labels}spec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n{}",
            src("pdb.yaml"),
            labels(full, comp, 6)
        );
    }

    let pod = pod_spec(v, c, &name, full, comp, port, &mut rng, kind == "CronJob");
    let pod_meta = format!(
        "metadata:\n  labels:\n{}  annotations:\n    checksum/config: {}\n    checksum/secret: {}\n    prometheus.io/scrape: \"true\"\n    prometheus.io/port: \"9102\"\nspec:\n{}",
        labels(full, comp, 4),
        rng.hex(64),
        rng.hex(64),
        indent(&pod, 2)
    );
    let header = |api: &str, kind: &str, file: &str| {
        format!(
            "{}apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\n  labels:\n    {meta_labels}",
            src(file)
        )
    };
    match kind {
        "CronJob" => {
            let _ = write!(
                out,
                "{}spec:\n  schedule: \"{}\"\n  concurrencyPolicy: Forbid\n  successfulJobsHistoryLimit: 3\n  failedJobsHistoryLimit: 1\n  jobTemplate:\n    spec:\n      backoffLimit: 2\n      activeDeadlineSeconds: 3600\n      template:\n{}",
                header("batch/v1", "CronJob", "cronjob.yaml"),
                s(c, "/schedule"),
                indent(&pod_meta, 8)
            );
        }
        "StatefulSet" => {
            let _ = write!(
                out,
                "{}spec:\n  replicas: {replicas}\n  serviceName: {name}\n  podManagementPolicy: Parallel\n  updateStrategy:\n    type: RollingUpdate\n  selector:\n    matchLabels:\n{}  template:\n{}  volumeClaimTemplates:\n    - metadata:\n        name: data\n      spec:\n        accessModes: [\"ReadWriteOnce\"]\n        storageClassName: {}\n        resources:\n          requests:\n            storage: 20Gi\n",
                header("apps/v1", "StatefulSet", "statefulset.yaml"),
                labels(full, comp, 6),
                indent(&pod_meta, 4),
                s(v, "/global/storageClass"),
            );
        }
        "DaemonSet" => {
            let _ = write!(
                out,
                "{}spec:\n  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxUnavailable: 10%\n  selector:\n    matchLabels:\n{}  template:\n{}",
                header("apps/v1", "DaemonSet", "daemonset.yaml"),
                labels(full, comp, 6),
                indent(&pod_meta, 4),
            );
        }
        _ => {
            let _ = write!(
                out,
                "{}spec:\n  replicas: {replicas}\n  revisionHistoryLimit: 10\n  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 25%\n      maxUnavailable: 0\n  selector:\n    matchLabels:\n{}  template:\n{}",
                header("apps/v1", "Deployment", "deployment.yaml"),
                labels(full, comp, 6),
                indent(&pod_meta, 4),
            );
            let _ = write!(
                out,
                "{}apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: {name}\n  labels:\n    {meta_labels}spec:\n  scaleTargetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: {name}\n  minReplicas: {replicas}\n  maxReplicas: {}\n  metrics:\n    - type: Resource\n      resource:\n        name: cpu\n        target:\n          type: Utilization\n          averageUtilization: 75\n",
                src("hpa.yaml"),
                replicas * 5
            );
        }
    }
}

fn base64_like(rng: &mut Rng, len: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|_| A[rng.below(64) as usize] as char)
        .collect::<String>()
        + "=="
}

#[allow(clippy::too_many_arguments)]
fn pod_spec(
    v: &Value,
    c: &Value,
    name: &str,
    full: &str,
    comp: &str,
    port: u64,
    rng: &mut Rng,
    job: bool,
) -> String {
    let mut p = String::new();
    let _ = write!(
        p,
        "serviceAccountName: {name}\nautomountServiceAccountToken: false\n{}securityContext:\n  runAsNonRoot: true\n  runAsUser: 1001\n  runAsGroup: 1001\n  fsGroup: 1001\n  seccompProfile:\n    type: RuntimeDefault\nimagePullSecrets:\n  - name: {}\n",
        if job {
            "restartPolicy: OnFailure\n"
        } else {
            "terminationGracePeriodSeconds: 45\n"
        },
        s(v, "/global/imagePullSecrets/0"),
    );
    if !job {
        let _ = write!(
            p,
            "affinity:\n  podAntiAffinity:\n    preferredDuringSchedulingIgnoredDuringExecution:\n      - weight: 100\n        podAffinityTerm:\n          topologyKey: kubernetes.io/hostname\n          labelSelector:\n            matchLabels:\n{}topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: topology.kubernetes.io/zone\n    whenUnsatisfiable: ScheduleAnyway\n    labelSelector:\n      matchLabels:\n{}tolerations:\n  - key: dedicated\n    operator: Equal\n    value: {full}\n    effect: NoSchedule\n",
            labels(full, comp, 14),
            labels(full, comp, 8),
        );
    }
    let _ = write!(
        p,
        "initContainers:\n  - name: wait-for-deps\n    image: \"{}\"\n    imagePullPolicy: IfNotPresent\n    command: [\"/bin/sh\", \"-c\"]\n    args:\n      - |\n        set -e\n        until nc -z {full}-db 5432; do echo waiting; sleep 2; done\n        echo ready\n    resources:\n      requests: {{cpu: 10m, memory: 16Mi}}\n      limits: {{cpu: 50m, memory: 32Mi}}\n",
        s(v, "/sidecars/init/image"),
    );
    p.push_str("containers:\n");
    // The main container.
    let mut main = String::new();
    let _ = write!(
        main,
        "- name: {comp}\n  image: \"{}\"\n  imagePullPolicy: IfNotPresent\n  args: [\"--port={port}\", \"--config=/etc/{comp}/application.properties\", \"--log-format=json\"]\n  ports:\n    - name: http\n      containerPort: {port}\n      protocol: TCP\n    - name: grpc\n      containerPort: {}\n      protocol: TCP\n  env:\n    - name: POD_NAME\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.name\n    - name: POD_NAMESPACE\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.namespace\n    - name: DB_PASSWORD\n      valueFrom:\n        secretKeyRef:\n          name: {name}-env\n          key: password\n    - name: GOMAXPROCS\n      valueFrom:\n        resourceFieldRef:\n          resource: limits.cpu\n",
        image_of(c),
        port + 1000,
    );
    if let Some(env) = c.pointer("/env").and_then(Value::as_object) {
        for (k, val) in env {
            let _ = write!(
                main,
                "    - name: {k}\n      value: \"{}\"\n",
                val.as_str().unwrap_or_default()
            );
        }
    }
    let _ = write!(
        main,
        "  envFrom:\n    - configMapRef:\n        name: {name}\n  resources:\n    requests:\n      cpu: {}\n      memory: {}\n    limits:\n      cpu: {}\n      memory: {}\n",
        s(c, "/resources/requests/cpu"),
        s(c, "/resources/requests/memory"),
        s(c, "/resources/limits/cpu"),
        s(c, "/resources/limits/memory"),
    );
    if !job {
        let _ = write!(
            main,
            "  startupProbe:\n    httpGet:\n      path: /healthz\n      port: http\n    failureThreshold: 30\n    periodSeconds: 5\n  livenessProbe:\n    httpGet:\n      path: /healthz\n      port: http\n    initialDelaySeconds: 10\n    periodSeconds: 10\n    timeoutSeconds: 3\n    failureThreshold: 6\n  readinessProbe:\n    httpGet:\n      path: /readyz\n      port: http\n    periodSeconds: 5\n    timeoutSeconds: 2\n"
        );
    }
    let _ = write!(
        main,
        "  securityContext:\n    allowPrivilegeEscalation: false\n    readOnlyRootFilesystem: true\n    capabilities:\n      drop: [\"ALL\"]\n  volumeMounts:\n    - name: config\n      mountPath: /etc/{comp}\n      readOnly: true\n    - name: tmp\n      mountPath: /tmp\n    - name: data\n      mountPath: /var/lib/{comp}\n"
    );
    p.push_str(&indent(&main, 2));
    if !job {
        // Sidecars: a proxy, a log shipper and a metrics exporter.
        let _ = write!(
            p,
            "  - name: proxy\n    image: {}\n    args: [\"-c\", \"/etc/envoy/envoy.yaml\", \"--service-cluster\", \"{name}\", \"--log-level\", \"warn\"]\n    ports:\n      - name: proxy\n        containerPort: 15001\n      - name: admin\n        containerPort: 15000\n    resources:\n      requests: {{cpu: 50m, memory: 64Mi}}\n      limits: {{cpu: 500m, memory: 256Mi}}\n    readinessProbe:\n      httpGet: {{path: /ready, port: admin}}\n      periodSeconds: 5\n    securityContext:\n      runAsUser: 101\n      allowPrivilegeEscalation: false\n    volumeMounts:\n      - {{name: envoy, mountPath: /etc/envoy, readOnly: true}}\n",
            s(v, "/sidecars/proxy/image"),
        );
        let _ = write!(
            p,
            "  - name: logs\n    image: '{}'\n    env:\n      - name: FLUENT_ELASTICSEARCH_HOST\n        value: logging.{}.svc\n      - name: FLUENT_TAG\n        value: {name}\n    resources:\n      requests: {{cpu: 20m, memory: 32Mi}}\n      limits: {{cpu: 200m, memory: 128Mi}}\n    volumeMounts:\n      - name: varlog\n        mountPath: /var/log\n        readOnly: true\n",
            s(v, "/sidecars/logs/image"),
            rng.word(),
        );
        let _ = write!(
            p,
            "  - name: metrics\n    image: {}\n    args: [\"--statsd.listen-udp=:9125\", \"--web.listen-address=:9102\"]\n    ports:\n      - {{name: metrics, containerPort: 9102}}\n    resources:\n      requests: {{cpu: 10m, memory: 16Mi}}\n",
            s(v, "/sidecars/metrics/image"),
        );
    }
    let _ = write!(
        p,
        "volumes:\n  - name: config\n    configMap:\n      name: {name}\n      defaultMode: 0444\n  - name: tmp\n    emptyDir:\n      medium: Memory\n      sizeLimit: 64Mi\n  - name: data\n    emptyDir: {{}}\n  - name: varlog\n    hostPath:\n      path: /var/log\n  - name: envoy\n    projected:\n      sources:\n        - configMap:\n            name: {name}\n            items:\n              - {{key: routes.json, path: routes.json}}\n        - secret:\n            name: {name}-env\n"
    );
    p
}
