//! Live judgement tables, over a release built with the Helm-faithful builder and indexed
//! through the real decoder.

use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::demo::build::{Chart, History};
use crate::image::Image;
use crate::store::Index;
use crate::values::coalesce::UpgradeValues;

const CANARY: &str = "CANARY-live-pa55w0rd";
const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn render(v: &serde_json::Value) -> String {
    let tag = v
        .pointer("/image/tag")
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    let pw = v
        .pointer("/password")
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    format!(
        r#"---
apiVersion: v1
kind: Secret
metadata:
  name: web
stringData:
  password: "{pw}"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: registry.example.com:5000/team/migrate:{tag}
      containers:
        - name: app
          image: nginx:{tag}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: backup
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: dump
              image: busybox:1.36
---
apiVersion: v1
kind: Pod
metadata:
  name: probe
spec:
  containers:
    - name: probe
      image: busybox:1.36
"#
    )
}

fn chart(version: &str, tag: &str) -> Chart {
    Chart {
        name: "app".into(),
        version: version.into(),
        app_version: tag.into(),
        values: json!({"image": {"tag": tag}, "password": ""}),
        render,
    }
}

/// Release `shop/web`: rev 1 (nginx 1.26, superseded), rev 2 (nginx 1.27, deployed).
fn index() -> Index {
    let mut h = History::install(
        "web",
        "shop",
        &chart("1.0.0", "1.26"),
        json!({"password": CANARY}),
    );
    h.begin_upgrade(&chart("1.1.0", "1.27"), json!({}), UpgradeValues::Default);
    h.complete();
    h.index()
}

fn c(name: &str, image: &str) -> Container {
    Container {
        name: name.into(),
        image: Image::new(image),
        init: false,
    }
}

fn init(name: &str, image: &str) -> Container {
    Container {
        init: true,
        ..c(name, image)
    }
}

fn owner(container: &str, manager: &str, time: &str) -> ImageOwner {
    ImageOwner {
        container: container.into(),
        manager: manager.into(),
        time: time.into(),
    }
}

const MIGRATE: &str = "registry.example.com:5000/team/migrate:1.27";

fn deployment(app: &str) -> LiveWorkload {
    LiveWorkload {
        kind: WorkloadKind::Deployment,
        namespace: "shop".into(),
        name: "web".into(),
        release_annotation: Some(ReleaseKey::new("shop", "web")),
        allow_drift: None,
        drift_mark: None,
        owners: Vec::new(),
        pod_template_hash: None,
        containers: vec![c("app", app), init("migrate", MIGRATE)],
        image_owners: vec![
            owner("app", "helm", "2026-11-26T10:00:00Z"),
            owner("migrate", "helm", "2026-11-26T10:00:00Z"),
        ],
    }
}

fn pod(app: &str) -> LiveWorkload {
    LiveWorkload {
        kind: WorkloadKind::Pod,
        name: "web-5d4f8-x7k2p".into(),
        release_annotation: None,
        owners: vec![Owner {
            kind: "ReplicaSet".into(),
            name: "web-5d4f8".into(),
        }],
        pod_template_hash: Some("5d4f8".into()),
        image_owners: vec![owner(
            "app",
            "kube-controller-manager",
            "2026-11-26T10:01:00Z",
        )],
        ..deployment(app)
    }
}

fn helm() -> Vec<String> {
    vec!["helm".into(), "helm-controller".into()]
}

/// Expected findings: kind and container.
type Kinds<'a> = Vec<(FindingKind, &'a str)>;
/// Owner templates known.
type Owners = Vec<(WorkloadKey, Vec<Container>)>;

fn kinds(j: &Judgement) -> Vec<(FindingKind, &str)> {
    j.findings
        .iter()
        .map(|f| (f.kind, f.container.as_str()))
        .collect()
}

#[test]
fn drift_table() {
    let idx = index();
    let kubectl = |mut w: LiveWorkload| {
        w.image_owners[0] = owner("app", "kubectl-set", "2026-11-27T08:00:00Z");
        w
    };
    let with = |mut w: LiveWorkload, extra: Container, by: Option<&str>| {
        if let Some(m) = by {
            w.image_owners
                .push(owner(&extra.name, m, "2026-11-27T09:00:00Z"));
        }
        w.containers.push(extra);
        w
    };
    let cases: Vec<(&str, LiveWorkload, Kinds)> = vec![
        ("chart image", deployment("nginx:1.27"), vec![]),
        (
            "same image, normalised",
            deployment("docker.io/library/nginx:1.27"),
            vec![],
        ),
        (
            "digest added to the chart's tag",
            deployment(&format!("nginx:1.27@{D}")),
            vec![],
        ),
        (
            "rolled back by hand",
            kubectl(deployment("nginx:1.26")),
            vec![(FindingKind::Drift, "app")],
        ),
        (
            "init container drift",
            {
                let mut w = deployment("nginx:1.27");
                w.containers[1] = init("migrate", "registry.example.com:5000/team/migrate:1.26");
                w
            },
            vec![(FindingKind::Drift, "migrate")],
        ),
        (
            "container added by kubectl",
            with(
                deployment("nginx:1.27"),
                c("debug", "busybox:1.36"),
                Some("kubectl-edit"),
            ),
            vec![(FindingKind::Added, "debug")],
        ),
        (
            "container added by Helm (a webhook at install)",
            with(
                deployment("nginx:1.27"),
                c("istio-proxy", "istio/proxyv2:1.24"),
                Some("helm"),
            ),
            vec![],
        ),
        (
            "container added by no one we can name",
            with(deployment("nginx:1.27"), c("x", "busybox:1.36"), None),
            vec![],
        ),
        (
            "break-glass",
            {
                let mut w = kubectl(deployment("nginx:1.26"));
                w.allow_drift = Some("INC-4711 rollback".into());
                w
            },
            vec![(FindingKind::BreakGlass, "app")],
        ),
        (
            "break-glass annotation without a reason is no break-glass",
            {
                let mut w = kubectl(deployment("nginx:1.26"));
                w.allow_drift = Some("  ".into());
                w
            },
            vec![(FindingKind::Drift, "app")],
        ),
    ];
    for (what, live, want) in cases {
        let j = judge(&live, &idx, &(), &helm());
        assert_eq!(kinds(&j), want, "{what}");
        assert_eq!(
            j.against,
            Some((ReleaseKey::new("shop", "web"), 2)),
            "{what}"
        );
    }
}

#[test]
fn a_finding_says_what_who_and_since_when() {
    let idx = index();
    let mut w = deployment("nginx:1.26");
    w.image_owners[0] = owner("app", "kubectl-set", "2026-11-27T08:00:00Z");
    w.drift_mark = Some(
        json!([{"container": "app", "chartImage": "nginx:1.27", "liveImage": "nginx:1.26",
                "manager": "kubectl-set", "user": "alice@example.com", "time": "2026-11-27T08:00:01Z"}])
        .to_string(),
    );
    let j = judge(&w, &idx, &(), &helm());
    let f = &j.findings[0];
    assert_eq!(
        f,
        &Finding {
            kind: FindingKind::Drift,
            workload: WorkloadKey::new(WorkloadKind::Deployment, "shop", "web"),
            container: "app".into(),
            init: false,
            live_image: "nginx:1.26".into(),
            chart_image: Some("nginx:1.27".into()),
            release: ReleaseKey::new("shop", "web"),
            revision: 2,
            since: Some("2026-11-27T08:00:00Z".into()),
            manager: Some("kubectl-set".into()),
            user: Some("alice@example.com".into()),
            reason: None,
        }
    );
    assert!(!format!("{j:?}").contains(CANARY));

    // Without managedFields ownership, the mark says who and when.
    w.image_owners.clear();
    let j = judge(&w, &idx, &(), &helm());
    assert_eq!(j.findings[0].since.as_deref(), Some("2026-11-27T08:00:01Z"));
    assert_eq!(j.findings[0].manager.as_deref(), Some("kubectl-set"));

    // A mark describing another image is not this drift's.
    w.containers[0] = c("app", "nginx:1.25");
    let j = judge(&w, &idx, &(), &helm());
    assert_eq!(
        (j.findings[0].user.as_ref(), j.findings[0].since.as_ref()),
        (None, None)
    );

    // Break-glass: its own result, with the reason.
    w.allow_drift = Some("INC-4711".into());
    let j = judge(&w, &idx, &(), &helm());
    assert_eq!(j.findings[0].kind, FindingKind::BreakGlass);
    assert_eq!(j.findings[0].reason.as_deref(), Some("INC-4711"));
}

#[test]
fn pods_only_for_in_place_edits() {
    let idx = index();
    let rs = WorkloadKey::new(WorkloadKind::ReplicaSet, "shop", "web-5d4f8");
    let deploy = WorkloadKey::new(WorkloadKind::Deployment, "shop", "web");
    let template = |app: &str| vec![c("app", app), init("migrate", MIGRATE)];
    let cases: Vec<(&str, Owners, &str, usize)> = vec![
        (
            "runs the chart",
            vec![(rs.clone(), template("nginx:1.27"))],
            "nginx:1.27",
            0,
        ),
        (
            "runs its drifted ReplicaSet's template: the owner's finding",
            vec![(rs.clone(), template("nginx:1.26"))],
            "nginx:1.26",
            0,
        ),
        (
            "differs from chart and ReplicaSet: edited in place",
            vec![(rs.clone(), template("nginx:1.27"))],
            "nginx:1.25",
            1,
        ),
        (
            "no ReplicaSet known: the Deployment's live template",
            vec![(deploy.clone(), template("nginx:1.26"))],
            "nginx:1.25",
            1,
        ),
        (
            "an old ReplicaSet's Pod during a rollout",
            vec![
                (rs.clone(), template("nginx:1.26")),
                (deploy.clone(), template("nginx:1.27")),
            ],
            "nginx:1.26",
            0,
        ),
        (
            "no owner template known: not judged",
            vec![],
            "nginx:1.25",
            0,
        ),
    ];
    for (what, templates, image, want) in cases {
        let templates: HashMap<WorkloadKey, Vec<Container>> = templates.into_iter().collect();
        let j = judge(&pod(image), &idx, &templates, &helm());
        assert_eq!(j.findings.len(), want, "{what}");
        assert!(
            j.findings.iter().all(|f| f.kind == FindingKind::Drift),
            "{what}"
        );
        assert_eq!(j.against.map(|a| a.1), Some(2), "{what}");
    }

    // A Pod with a container its owner's template does not have (injected at creation).
    let mut p = pod("nginx:1.27");
    p.containers.push(c("istio-proxy", "istio/proxyv2:1.24"));
    p.image_owners
        .push(owner("istio-proxy", "kubectl-edit", "2026-11-27T08:00:00Z"));
    let templates: HashMap<WorkloadKey, Vec<Container>> =
        [(rs, template("nginx:1.27"))].into_iter().collect();
    assert!(judge(&p, &idx, &templates, &helm()).findings.is_empty());

    // A bare Pod the chart renders is judged like any workload.
    let bare = LiveWorkload {
        kind: WorkloadKind::Pod,
        name: "probe".into(),
        owners: Vec::new(),
        pod_template_hash: None,
        containers: vec![c("probe", "busybox:1.35")],
        ..deployment("x")
    };
    assert_eq!(
        kinds(&judge(&bare, &idx, &(), &helm())),
        vec![(FindingKind::Drift, "probe")]
    );
}

#[test]
fn owner_chain_and_unknown_objects() {
    let idx = index();
    // A Pod of a Job of the CronJob, found through the owner chain (Pod → Job → CronJob)
    // and edited in place.
    let job = LiveWorkload {
        kind: WorkloadKind::Job,
        name: "backup-29000000".into(),
        release_annotation: None,
        owners: vec![Owner {
            kind: "CronJob".into(),
            name: "backup".into(),
        }],
        containers: vec![c("dump", "busybox:1.36")],
        image_owners: vec![owner(
            "dump",
            "kube-controller-manager",
            "2026-11-27T08:00:00Z",
        )],
        ..deployment("x")
    };
    let job_pod = LiveWorkload {
        kind: WorkloadKind::Pod,
        name: "backup-29000000-q2x8v".into(),
        owners: vec![Owner {
            kind: "Job".into(),
            name: "backup-29000000".into(),
        }],
        containers: vec![c("dump", "busybox:1.35")],
        image_owners: vec![owner("dump", "kubectl-patch", "2026-11-27T08:05:00Z")],
        ..job.clone()
    };
    let templates: HashMap<WorkloadKey, Vec<Container>> =
        [(job.key(), job.containers.clone())].into_iter().collect();
    let j = judge(&job_pod, &idx, &templates, &helm());
    assert_eq!(kinds(&j), vec![(FindingKind::Drift, "dump")]);
    assert_eq!(j.findings[0].chart_image.as_deref(), Some("busybox:1.36"));
    assert_eq!(j.findings[0].manager.as_deref(), Some("kubectl-patch"));
    // The Job itself, and an old ReplicaSet of the Deployment, are their owners' business:
    // a Job's template is immutable, an old ReplicaSet keeps an old rollout's images.
    let mut old_job = job.clone();
    old_job.containers = vec![c("dump", "busybox:1.35")];
    let old_rs = LiveWorkload {
        kind: WorkloadKind::ReplicaSet,
        name: "web-6c9d7".into(),
        owners: vec![Owner {
            kind: "Deployment".into(),
            name: "web".into(),
        }],
        ..deployment("nginx:1.26")
    };
    for w in [&old_job, &old_rs] {
        assert_eq!(
            judge(w, &idx, &(), &helm()),
            Judgement::default(),
            "{}",
            w.name
        );
    }

    // Not rendered by any release: not judged, not counted.
    let mut other = deployment("nginx:1.0");
    other.name = "unrelated".into();
    other.release_annotation = None;
    assert_eq!(judge(&other, &idx, &(), &helm()), Judgement::default());

    // Annotated with a release that does not render it: the reverse map decides.
    let mut claimed = deployment("nginx:1.26");
    claimed.release_annotation = Some(ReleaseKey::new("shop", "other"));
    let j = judge(&claimed, &idx, &(), &helm());
    assert_eq!(j.findings.len(), 1);
    assert_eq!(j.findings[0].release, ReleaseKey::new("shop", "web"));

    // Same name in another namespace: not this release's object.
    let mut elsewhere = deployment("nginx:1.26");
    elsewhere.namespace = "staging".into();
    elsewhere.release_annotation = None;
    assert_eq!(judge(&elsewhere, &idx, &(), &helm()), Judgement::default());
}
