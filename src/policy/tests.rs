//! Decision tables. Releases are built with the Helm-faithful builder and indexed through the
//! real decoder, so these tests exercise the same data the server sees.

use serde_json::json;

use super::resolve::{cronjob_of, deployment_of};
use super::*;
use crate::actor::WriterFacts;
use crate::demo::build::{Chart, History};
use crate::helm::DecodeLimits;
use crate::helm::record::index_record;
use crate::image::Image;
use crate::store::Index;
use crate::text::{WARNING_MAX, clip, warning as short};
use crate::values::coalesce::UpgradeValues;

const CANARY: &str = "CANARY-pa55w0rd-never-print";
const NOW: &str = "2026-11-26T12:00:00Z";

fn render(v: &serde_json::Value) -> String {
    let tag = |p: &str| {
        v.pointer(p)
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    format!(
        r#"---
# Source: app/templates/secret.yaml
apiVersion: v1
kind: Secret
metadata:
  name: web
stringData:
  password: "{pw}"
---
# Source: app/templates/deploy.yaml
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
# Source: app/templates/cron.yaml
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
"#,
        pw = tag("/password"),
        tag = tag("/image/tag"),
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
fn history() -> History {
    let mut h = History::install(
        "web",
        "shop",
        &chart("1.0.0", "1.26"),
        json!({"password": CANARY}),
    );
    h.begin_upgrade(
        &chart("1.1.0", "1.27"),
        json!({"password": CANARY}),
        UpgradeValues::Default,
    );
    h.complete();
    h
}

fn index_of(h: &History) -> Index {
    h.index()
}

fn containers(list: &[(&str, &str)]) -> Vec<Container> {
    list.iter()
        .map(|(n, i)| Container {
            name: (*n).into(),
            image: Image::new(i),
            init: *n == "migrate",
        })
        .collect()
}

const CHART_INIT: &str = "registry.example.com:5000/team/migrate:1.27";

/// An UPDATE of Deployment shop/web by `kubectl set image`, from 1.27 to `new`.
fn update(new: &str) -> Facts {
    Facts {
        operation: Operation::Update,
        kind: Some(WorkloadKind::Deployment),
        namespace: "shop".into(),
        name: "web".into(),
        writer: WriterFacts {
            user: "alice@example.com".into(),
            groups: vec!["system:authenticated".into()],
            field_manager: Some("kubectl-set".into()),
            ..WriterFacts::default()
        },
        release_annotation: Some(ReleaseKey::new("shop", "web")),
        allow_drift: None,
        drift_mark: None,
        has_annotations: true,
        owners: vec![],
        pod_template_hash: None,
        containers: containers(&[("app", new), ("migrate", CHART_INIT)]),
        old_containers: Some(containers(&[
            ("app", "nginx:1.27"),
            ("migrate", CHART_INIT),
        ])),
        old_image_owners: vec![],
        old_allow_drift: None,
        old_drift_mark: None,
        record: None,
        object_uid: None,
    }
}

/// A patch as the JSON the API server receives.
fn ops(p: &json_patch::Patch) -> serde_json::Value {
    serde_json::to_value(p).expect("serialises")
}

fn decide_in(mode: Mode, webhook: Webhook, req: &Facts, idx: &Index) -> Verdict {
    decide(webhook, req, idx, &Settings::new(mode), NOW)
}

fn assert_no_canary(v: &Verdict) {
    let all = format!("{v:?}");
    assert!(!all.contains(CANARY), "canary leaked: {all}");
}

fn assert_warning_sizes(v: &Verdict) {
    for w in &v.warnings {
        assert!(w.len() <= WARNING_MAX, "{w}");
    }
}

#[test]
fn manual_image_drift_by_mode() {
    let idx = index_of(&history());
    let req = update("nginx:1.26");
    // (mode, webhook, allowed, warnings?, patch?, audit annotations?)
    let cases = [
        (Mode::Enforce, Webhook::Validate, false, false, false, false),
        (Mode::Enforce, Webhook::Mutate, true, false, false, false),
        (Mode::Audit, Webhook::Validate, true, true, false, true),
        (Mode::Audit, Webhook::Mutate, true, false, true, false),
        (Mode::Off, Webhook::Validate, true, false, false, false),
        (Mode::Off, Webhook::Mutate, true, false, false, false),
    ];
    for (mode, webhook, allowed, warns, patch, audit) in cases {
        let v = decide_in(mode, webhook, &req, &idx);
        let what = format!("{mode:?} {webhook:?}: {v:?}");
        assert_eq!(v.allowed, allowed, "{what}");
        assert_eq!(!v.warnings.is_empty(), warns, "{what}");
        assert_eq!(!v.patch.is_empty(), patch, "{what}");
        assert_eq!(!v.audit_annotations.is_empty(), audit, "{what}");
        assert_no_canary(&v);
        assert_warning_sizes(&v);
    }
}

#[test]
fn denial_names_everything_and_both_ways_forward() {
    let idx = index_of(&history());
    let v = decide_in(
        Mode::Enforce,
        Webhook::Validate,
        &update("nginx:1.26"),
        &idx,
    );
    let msg = v.message.clone().expect("a message");
    for needle in [
        "\"app\"",
        "nginx:1.26",
        "nginx:1.27",
        "shop/web",
        "revision 2",
        "helm upgrade",
        ALLOW_DRIFT,
    ] {
        assert!(msg.contains(needle), "{needle} missing from {msg}");
    }
    assert_eq!(v.outcome(), Outcome::Denied);
    assert_eq!(v.drifts.len(), 1);
    assert_eq!(v.events.len(), 1);
    assert_eq!(v.events[0].reason, "ImageDriftDenied");
}

#[test]
fn audit_warnings_are_short() {
    let idx = index_of(&history());
    let v = decide_in(Mode::Audit, Webhook::Validate, &update("nginx:1.26"), &idx);
    assert_eq!(v.outcome(), Outcome::Warned);
    for w in &v.warnings {
        assert!(w.len() <= 120, "{} chars: {w}", w.len());
    }
    let (k, mark) = &v.audit_annotations[0];
    assert_eq!(k, "drift");
    let parsed: serde_json::Value = serde_json::from_str(mark).expect("compact JSON");
    assert_eq!(parsed[0]["container"], "app");
    assert_eq!(parsed[0]["chartImage"], "nginx:1.27");
    assert_eq!(parsed[0]["liveImage"], "nginx:1.26");
    assert_eq!(parsed[0]["manager"], "kubectl-set");
    assert_eq!(parsed[0]["user"], "alice@example.com");
    assert_eq!(parsed[0]["time"], NOW);
}

#[test]
fn what_is_not_a_violation() {
    let idx = index_of(&history());
    let mut back_to_chart = update("docker.io/library/nginx:1.27");
    back_to_chart.old_containers = Some(containers(&[
        ("app", "nginx:1.26"),
        ("migrate", CHART_INIT),
    ]));
    let untouched = update("nginx:1.27");
    let mut still_drifting_untouched = update("nginx:1.26");
    still_drifting_untouched.old_containers = Some(still_drifting_untouched.containers.clone());
    // Injected when the object was created: already in the old object, so not "added".
    let mut sidecar = update("nginx:1.27");
    let injected = Container {
        name: "istio-proxy".into(),
        image: Image::new("istio/proxyv2:1.22"),
        init: false,
    };
    sidecar.containers.push(injected.clone());
    if let Some(old) = sidecar.old_containers.as_mut() {
        old.push(injected);
    }
    let mut controller = update("nginx:1.26");
    controller.writer.user = "system:serviceaccount:kube-system:deployment-controller".into();
    controller.writer.field_manager = None;
    let mut not_helm = update("nginx:1.26");
    not_helm.name = "other".into();
    not_helm.release_annotation = None;
    let mut delete = update("nginx:1.26");
    delete.operation = Operation::Delete;
    let mut secret = update("nginx:1.26");
    secret.kind = None;
    for (what, req) in [
        ("back to the chart's image", back_to_chart),
        ("no image touched", untouched),
        (
            "old drift, this edit does not touch images",
            still_drifting_untouched,
        ),
        ("injected container already in the old object", sidecar),
        ("Kubernetes controller", controller),
        ("not Helm-managed", not_helm),
        ("delete", delete),
        ("not a workload", secret),
    ] {
        let v = decide_in(Mode::Enforce, Webhook::Validate, &req, &idx);
        assert!(v.allowed, "{what}: {v:?}");
        assert!(v.warnings.is_empty(), "{what}: {v:?}");
        assert!(v.drifts.is_empty(), "{what}");
    }
}

#[test]
fn break_glass_allows_and_records_in_every_mode() {
    let idx = index_of(&history());
    let mut req = update("nginx:1.26");
    req.allow_drift = Some("INC-4711 data dir not upgraded".into());
    for mode in [Mode::Enforce, Mode::Audit] {
        let v = decide_in(mode, Webhook::Validate, &req, &idx);
        assert!(v.allowed, "{mode:?}");
        assert!(v.warnings[0].contains("INC-4711"), "{:?}", v.warnings);
        assert!(
            v.audit_annotations
                .iter()
                .any(|(k, r)| k == "allow-drift" && r.contains("INC-4711"))
        );
        assert_eq!(v.events[0].reason, "BreakGlassDrift");
        let m = decide_in(mode, Webhook::Mutate, &req, &idx);
        let value = ops(&m.patch)[0]["value"]
            .as_str()
            .expect("mark value")
            .to_owned();
        assert!(value.contains("INC-4711"), "{value}");
    }
    // A break-glass left on the object by an earlier edit does not open it for good.
    let mut later = req.clone();
    later.old_allow_drift = later.allow_drift.clone();
    assert!(!decide_in(Mode::Enforce, Webhook::Validate, &later, &idx).allowed);
    // An empty reason is no break-glass.
    req.allow_drift = Some("  ".into());
    assert!(!decide_in(Mode::Enforce, Webhook::Validate, &req, &idx).allowed);
}

#[test]
fn mark_is_idempotent_and_removed_when_back_in_line() {
    let idx = index_of(&history());
    let mut req = update("nginx:1.26");
    req.has_annotations = false;
    let first = decide_in(Mode::Audit, Webhook::Mutate, &req, &idx);
    assert_eq!(first.patch.0.len(), 1);
    assert_eq!(ops(&first.patch)[0]["path"], "/metadata/annotations");

    // Apply the patch for real to an object, then run the mutating webhook on its output.
    let mut obj = json!({"metadata": {"name": "web"}});
    let patch: json_patch::Patch = serde_json::from_value(ops(&first.patch)).expect("RFC 6902");
    json_patch::patch(&mut obj, &patch).expect("applies");
    let mark = obj["metadata"]["annotations"][DRIFT_MARK]
        .as_str()
        .expect("mark")
        .to_owned();
    let mut again = req.clone();
    again.has_annotations = true;
    again.drift_mark = Some(mark.clone());
    let second = decide_later(&again, &idx, "2026-11-26T12:00:05Z");
    assert!(
        second.patch.0.is_empty(),
        "reinvocation must not patch: {:?}",
        second.patch
    );

    // Someone sets the chart's image again: the mark goes.
    let mut fixed = update("nginx:1.27");
    fixed.old_containers = Some(containers(&[
        ("app", "nginx:1.26"),
        ("migrate", CHART_INIT),
    ]));
    fixed.drift_mark = Some(mark);
    let v = decide_in(Mode::Audit, Webhook::Mutate, &fixed, &idx);
    assert_eq!(
        ops(&v.patch),
        json!([{"op": "remove", "path": "/metadata/annotations/helm-guard.io~1drift"}])
    );
    let patch: json_patch::Patch = serde_json::from_value(ops(&v.patch)).expect("RFC 6902");
    json_patch::patch(&mut obj, &patch).expect("applies");
    assert!(obj["metadata"]["annotations"].get(DRIFT_MARK).is_none());
}

fn decide_later(req: &Facts, idx: &Index, now: &str) -> Verdict {
    decide(Webhook::Mutate, req, idx, &Settings::new(Mode::Audit), now)
}

#[test]
fn helm_is_trusted_only_with_a_pending_revision() {
    let mut h = history();
    let mut helm_write = update("nginx:1.28");
    helm_write.writer.field_manager = Some("helm".into());

    // No pending revision: a forged claim (`kubectl --field-manager=helm`) is a manual write.
    let idx = index_of(&h);
    let v = decide_in(Mode::Enforce, Webhook::Validate, &helm_write, &idx);
    assert!(!v.allowed);
    assert_eq!(v.actor, "helm-unverified");

    // Helm has written the pending revision that renders 1.28: its own write is allowed.
    h.begin_upgrade(
        &chart("1.2.0", "1.28"),
        json!({}),
        UpgradeValues::ResetValues,
    );
    let idx = index_of(&h);
    helm_write.containers = containers(&[
        ("app", "nginx:1.28"),
        ("migrate", "registry.example.com:5000/team/migrate:1.28"),
    ]);
    let v = decide_in(Mode::Enforce, Webhook::Validate, &helm_write, &idx);
    assert!(v.allowed, "{v:?}");
    assert_eq!(v.actor, "helm");

    // Even during the upgrade, an image the pending revision does not render is drift.
    helm_write.containers = containers(&[("app", "nginx:1.29"), ("migrate", CHART_INIT)]);
    let v = decide_in(Mode::Enforce, Webhook::Validate, &helm_write, &idx);
    assert!(!v.allowed);
    assert!(v.message.expect("message").contains("revision 3"));
}

#[test]
fn objects_the_release_does_not_render_are_judged_through_their_owner() {
    let idx = index_of(&history());
    let mut rs = update("nginx:1.26");
    rs.kind = Some(WorkloadKind::ReplicaSet);
    rs.name = "web-7d4b9c8f6d".into();
    rs.pod_template_hash = Some("7d4b9c8f6d".into());
    rs.owners = vec![Owner {
        kind: "Deployment".into(),
        name: "web".into(),
    }];

    let mut pod = update("nginx:1.26");
    pod.kind = Some(WorkloadKind::Pod);
    pod.name = "web-7d4b9c8f6d-x2x9z".into();
    pod.release_annotation = None;
    pod.pod_template_hash = Some("7d4b9c8f6d".into());
    pod.owners = vec![Owner {
        kind: "ReplicaSet".into(),
        name: "web-7d4b9c8f6d".into(),
    }];

    let mut cron_pod = update("busybox:1.37");
    cron_pod.kind = Some(WorkloadKind::Pod);
    cron_pod.name = "backup-29012345-abcde".into();
    cron_pod.release_annotation = None;
    cron_pod.owners = vec![Owner {
        kind: "Job".into(),
        name: "backup-29012345".into(),
    }];
    cron_pod.containers = containers(&[("dump", "busybox:1.37")]);
    cron_pod.old_containers = Some(containers(&[("dump", "busybox:1.36")]));

    for (what, req) in [
        ("replicaset", rs),
        ("pod of a deployment", pod),
        ("pod of a cronjob", cron_pod),
    ] {
        let v = decide_in(Mode::Enforce, Webhook::Validate, &req, &idx);
        assert!(!v.allowed, "{what}: {v:?}");
        let ok = {
            let mut r = req.clone();
            r.containers = r.old_containers.clone().expect("old");
            decide_in(Mode::Enforce, Webhook::Validate, &r, &idx)
        };
        assert!(ok.allowed, "{what}: unchanged images pass");
    }

    // A ReplicaSet whose Deployment the release does not render: not judged, no guessing.
    let mut orphan = update("nginx:1.26");
    orphan.kind = Some(WorkloadKind::ReplicaSet);
    orphan.name = "api-5f6d".into();
    orphan.owners = vec![Owner {
        kind: "Deployment".into(),
        name: "api".into(),
    }];
    let v = decide_in(Mode::Enforce, Webhook::Validate, &orphan, &idx);
    assert!(v.allowed && v.warnings.is_empty(), "{v:?}");
}

#[test]
fn missing_release_warns_or_denies() {
    let idx = index_of(&history());
    let mut req = update("nginx:1.26");
    req.name = "ghost".into();
    req.release_annotation = Some(ReleaseKey::new("shop", "ghost"));
    let v = decide_in(Mode::Enforce, Webhook::Validate, &req, &idx);
    assert!(v.allowed);
    assert!(v.warnings[0].contains("shop/ghost"), "{:?}", v.warnings);

    let mut settings = Settings::new(Mode::Enforce);
    settings.missing_release = MissingRelease::Deny;
    let v = decide(Webhook::Validate, &req, &idx, &settings, NOW);
    assert!(!v.allowed);
    assert!(v.message.expect("message").contains("shop/ghost"));

    // An edit that does not touch images is not held up by a missing release.
    req.containers = req.old_containers.clone().expect("old");
    assert!(decide(Webhook::Validate, &req, &idx, &settings, NOW).allowed);
}

#[test]
fn manual_create_of_a_rendered_object_is_judged() {
    let idx = index_of(&history());
    let mut req = update("nginx:1.26");
    req.operation = Operation::Create;
    req.old_containers = None;
    req.writer.field_manager = Some("kubectl-create".into());
    let v = decide_in(Mode::Enforce, Webhook::Validate, &req, &idx);
    assert!(!v.allowed, "{v:?}");
    req.containers = containers(&[("app", "nginx:1.27"), ("migrate", CHART_INIT)]);
    assert!(decide_in(Mode::Enforce, Webhook::Validate, &req, &idx).allowed);
}

#[test]
fn long_references_keep_warnings_within_limits() {
    let idx = index_of(&history());
    let long = format!(
        "registry.example.com/{}/app:1",
        "very-long-path-segment/".repeat(12).trim_end_matches('/')
    );
    let mut req = update(&long);
    req.allow_drift = Some("é".repeat(300));
    let v = decide_in(Mode::Audit, Webhook::Validate, &req, &idx);
    assert!(!v.warnings.is_empty());
    assert_warning_sizes(&v);
}

#[test]
fn owner_name_helpers() {
    assert_eq!(
        deployment_of("web-7d4b9c8f6d", Some("7d4b9c8f6d")),
        Some("web")
    );
    assert_eq!(deployment_of("web-api-7d4b", None), Some("web-api"));
    assert_eq!(deployment_of("web-7d4b", Some("other")), None);
    assert_eq!(cronjob_of("backup-29012345"), Some("backup"));
    assert_eq!(cronjob_of("backup-manual"), None);
    assert_eq!(short(&"x".repeat(300)).len(), WARNING_MAX);
    assert_eq!(clip("héllo", 2), "h");
}

#[test]
fn helm_overwriting_manual_drift_says_who_set_it() {
    let mut h = history();
    h.begin_upgrade(
        &chart("1.2.0", "1.28"),
        json!({}),
        UpgradeValues::ResetValues,
    );
    let idx = index_of(&h);
    let mut req = update("nginx:1.28");
    req.writer.field_manager = Some("helm".into());
    req.containers = containers(&[
        ("app", "nginx:1.28"),
        ("migrate", "registry.example.com:5000/team/migrate:1.28"),
    ]);
    req.old_containers = Some(containers(&[
        ("app", "nginx:1.26"),
        ("migrate", CHART_INIT),
    ]));
    req.old_image_owners = vec![ImageOwner {
        container: "app".into(),
        manager: "kubectl-set".into(),
        time: "2026-11-20T08:00:00Z".into(),
    }];
    let v = decide_in(Mode::Enforce, Webhook::Validate, &req, &idx);
    assert!(v.allowed, "{v:?}");
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    let w = &v.warnings[0];
    for needle in [
        "helm replaces app",
        "nginx:1.26",
        "kubectl-set",
        "2026-11-20T08:00:00Z",
        ":1.28",
    ] {
        assert!(w.contains(needle), "{needle} missing: {w}");
    }
    assert!(w.len() <= 120, "{w}");

    // With a drift mark, the user and the break-glass reason are named too.
    req.old_image_owners.clear();
    req.old_drift_mark = Some(
        json!([{"container": "app", "chartImage": "nginx:1.27", "liveImage": "nginx:1.26",
                "manager": "kubectl-edit", "user": "bob", "time": "2026-11-21T09:00:00Z", "reason": "INC-9"}])
        .to_string(),
    );
    let v = decide_in(Mode::Enforce, Webhook::Validate, &req, &idx);
    assert!(
        v.warnings[0].contains("bob") && v.warnings[0].contains("INC-9"),
        "{:?}",
        v.warnings
    );

    // Helm replacing its own image says nothing.
    req.old_drift_mark = None;
    req.old_containers = Some(containers(&[
        ("app", "nginx:1.27"),
        ("migrate", CHART_INIT),
    ]));
    assert!(
        decide_in(Mode::Enforce, Webhook::Validate, &req, &idx)
            .warnings
            .is_empty()
    );
}

/// A release-record write of the newest revision of `h`.
fn record_write(h: &History) -> Facts {
    let rev = index_record(&h.last().secret(), DecodeLimits::default())
        .expect("record")
        .expect("decodes");
    let mut req = update("nginx:1.27");
    req.kind = None;
    req.name = h.last().object_name();
    req.release_annotation = None;
    req.containers.clear();
    req.old_containers = None;
    req.operation = Operation::Create;
    req.writer.field_manager = None;
    req.record = Some(RecordFacts::Decoded(rev));
    req
}

#[test]
fn stale_persisted_image_values_on_upgrade() {
    // rev 1: --set image.tag=1.26 (and a password); rev 2: chart moves to 1.27, plain upgrade.
    let mut h = History::install(
        "web",
        "shop",
        &chart("1.0.0", "1.26"),
        json!({"image": {"tag": "1.26"}, "password": CANARY}),
    );
    h.begin_upgrade(&chart("1.1.0", "1.27"), json!({}), UpgradeValues::Default);
    let idx = index_of(&h);
    let req = record_write(&h);
    let mut settings = Settings::new(Mode::Enforce);
    let v = decide(Webhook::Validate, &req, &idx, &settings, NOW);
    assert!(v.allowed);
    let text = v.warnings.join("\n");
    for needle in [
        "image.tag=1.26 pinned since revision 1",
        "chart 1.1.0 default is 1.27",
        "helm upgrade web",
        "--set image.tag=1.27",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    assert!(
        v.events
            .iter()
            .all(|e| e.reason == "StaleImageValues" && e.target.is_some())
    );
    assert!(!v.events.is_empty());
    assert_warning_sizes(&v);
    assert_no_canary(&v);

    settings.stale_values = StaleValues::Deny;
    let v = decide(Webhook::Validate, &req, &idx, &settings, NOW);
    assert!(!v.allowed);
    assert!(
        v.message
            .as_deref()
            .unwrap_or("")
            .contains("image.tag=1.26")
    );
    assert_no_canary(&v);

    settings.stale_values = StaleValues::Off;
    assert!(
        decide(Webhook::Validate, &req, &idx, &settings, NOW)
            .warnings
            .is_empty()
    );
    // The mutating webhook never touches records.
    settings.stale_values = StaleValues::Deny;
    let m = decide(Webhook::Mutate, &req, &idx, &settings, NOW);
    assert!(m.allowed && m.patch.is_empty() && m.warnings.is_empty());
}

#[test]
fn records_that_are_not_stale_pass_silently() {
    let settings = Settings::new(Mode::Enforce);
    // First install.
    let h = History::install(
        "web",
        "shop",
        &chart("1.0.0", "1.26"),
        json!({"image": {"tag": "1.26"}}),
    );
    let mut first = h.clone();
    first.revisions[0].status = crate::helm::Status::PendingInstall;
    let v = decide(
        Webhook::Validate,
        &record_write(&first),
        &index_of(&first),
        &settings,
        NOW,
    );
    assert!(v.allowed && v.warnings.is_empty());
    // The tag set fresh in this upgrade.
    let mut fresh = h.clone();
    fresh.begin_upgrade(
        &chart("1.1.0", "1.27"),
        json!({"image": {"tag": "1.27.1"}}),
        UpgradeValues::Default,
    );
    let v = decide(
        Webhook::Validate,
        &record_write(&fresh),
        &index_of(&fresh),
        &settings,
        NOW,
    );
    assert!(v.allowed && v.warnings.is_empty(), "{v:?}");
    // --reset-values drops the pin.
    let mut reset = h.clone();
    reset.begin_upgrade(
        &chart("1.1.0", "1.27"),
        json!({}),
        UpgradeValues::ResetValues,
    );
    let v = decide(
        Webhook::Validate,
        &record_write(&reset),
        &index_of(&reset),
        &settings,
        NOW,
    );
    assert!(v.warnings.is_empty(), "{v:?}");
    // Helm marking the revision deployed afterwards is bookkeeping: silent.
    let mut done = h.clone();
    done.begin_upgrade(&chart("1.1.0", "1.27"), json!({}), UpgradeValues::Default);
    done.complete();
    let v = decide(
        Webhook::Validate,
        &record_write(&done),
        &index_of(&done),
        &settings,
        NOW,
    );
    assert!(v.warnings.is_empty());
    // An undecodable record never blocks Helm.
    let mut broken = record_write(&h);
    broken.record = Some(RecordFacts::Undecodable("Secret shop/x: not base64".into()));
    assert!(decide(Webhook::Validate, &broken, &index_of(&h), &settings, NOW).allowed);
}

/// Enforce cannot be walked around by renaming, adding or swapping containers.
#[test]
fn renamed_added_and_swapped_containers_are_judged() {
    let idx = index_of(&history());
    let c = |name: &str, image: &str, init: bool| Container {
        name: name.into(),
        image: Image::new(image),
        init,
    };
    let with = |new: Vec<Container>, old: Vec<Container>| {
        let mut f = update("nginx:1.27");
        f.containers = new;
        f.old_containers = Some(old);
        f
    };
    let chart = || {
        vec![
            c("app", "nginx:1.27", false),
            c("migrate", CHART_INIT, true),
        ]
    };
    let plus = |extra: Container| {
        let mut v = chart();
        v.push(extra);
        v
    };
    // (what, facts, denied, the container named in the denial)
    let cases = [
        (
            "rename with a new image",
            with(
                vec![
                    c("app2", "ghcr.io/acme/web:6.6.6", false),
                    c("migrate", CHART_INIT, true),
                ],
                chart(),
            ),
            true,
            "app2",
        ),
        (
            "rename keeping the chart's image",
            with(
                vec![
                    c("app2", "nginx:1.27", false),
                    c("migrate", CHART_INIT, true),
                ],
                chart(),
            ),
            false,
            "",
        ),
        (
            "add a container",
            with(plus(c("debug", "busybox:1.36", false)), chart()),
            true,
            "debug",
        ),
        (
            "add an init container",
            with(plus(c("pre", "evil.example.com/x:1", true)), chart()),
            true,
            "pre",
        ),
        (
            "remove and add",
            with(
                vec![
                    c("web", "nginx:1.26", false),
                    c("migrate", CHART_INIT, true),
                ],
                chart(),
            ),
            true,
            "web",
        ),
        (
            "change an injected container's image",
            with(
                plus(c("istio-proxy", "evil/proxy:1", false)),
                plus(c("istio-proxy", "istio/proxyv2:1.22", false)),
            ),
            true,
            "istio-proxy",
        ),
        (
            "injected container unchanged",
            with(
                plus(c("istio-proxy", "istio/proxyv2:1.22", false)),
                plus(c("istio-proxy", "istio/proxyv2:1.22", false)),
            ),
            false,
            "",
        ),
        (
            "second step of a split edit: the renamed container's image changes",
            with(
                vec![
                    c("app2", "nginx:1.26", false),
                    c("migrate", CHART_INIT, true),
                ],
                vec![
                    c("app2", "nginx:1.27", false),
                    c("migrate", CHART_INIT, true),
                ],
            ),
            true,
            "app2",
        ),
        (
            "container removed",
            with(vec![c("app", "nginx:1.27", false)], chart()),
            false,
            "",
        ),
    ];
    for (what, facts, denied, named) in cases {
        let v = decide_in(Mode::Enforce, Webhook::Validate, &facts, &idx);
        assert_eq!(!v.allowed, denied, "{what}: {v:?}");
        if denied {
            let msg = v.message.as_deref().unwrap_or_default();
            assert!(
                msg.contains(&format!("container {named:?}")),
                "{what}: {msg}"
            );
        }
        let mut audit = decide_in(Mode::Audit, Webhook::Mutate, &facts, &idx);
        assert_eq!(audit.patch.0.is_empty(), !denied, "{what}: mark in audit");
        audit.patch.0.clear();
    }
    // CREATE by hand of an object the chart renders, with an extra container.
    let mut create = with(plus(c("debug", "busybox:1.36", false)), vec![]);
    create.operation = Operation::Create;
    create.old_containers = None;
    assert!(!decide_in(Mode::Enforce, Webhook::Validate, &create, &idx).allowed);
}

/// An added container let through in audit stays in the mark while it runs.
#[test]
fn an_added_container_stays_marked_until_it_is_gone() {
    let idx = index_of(&history());
    let debug = Container {
        name: "debug".into(),
        image: Image::new("busybox:1.36"),
        init: false,
    };
    let mut add = update("nginx:1.27");
    add.containers.push(debug.clone());
    let first = decide_in(Mode::Audit, Webhook::Mutate, &add, &idx);
    let mut obj = json!({"metadata": {"name": "web", "annotations": {}}});
    json_patch::patch(&mut obj, &first.patch).expect("applies");
    let mark = obj["metadata"]["annotations"][DRIFT_MARK]
        .as_str()
        .expect("mark")
        .to_owned();
    assert!(mark.contains("\"chartImage\":\"\""), "{mark}");
    // A later edit that does not touch images keeps the mark (no patch at all).
    let mut later = update("nginx:1.27");
    later.containers.push(debug.clone());
    later.old_containers = Some(later.containers.clone());
    later.drift_mark = Some(mark.clone());
    let v = decide_in(Mode::Audit, Webhook::Mutate, &later, &idx);
    assert!(v.patch.0.is_empty(), "{:?}", v.patch);
    // The container removed: the mark goes.
    let mut gone = update("nginx:1.27");
    gone.old_containers = Some(later.containers.clone());
    gone.drift_mark = Some(mark);
    let v = decide_in(Mode::Audit, Webhook::Mutate, &gone, &idx);
    assert_eq!(ops(&v.patch)[0]["op"], "remove");
}

/// Answers stay within a few KiB whatever the input, and show no control characters.
#[test]
fn answers_are_bounded_and_printable() {
    let idx = index_of(&history());
    let mut many = update("nginx:1.27");
    for i in 0..10_000 {
        many.containers.push(Container {
            name: format!("c{i}").into(),
            image: Image::new(&format!("evil.example.com/x:{i}")),
            init: false,
        });
    }
    let huge = format!("nginx:{}", "9".repeat(1 << 20));
    many.containers[0].image = Image::new(&huge);
    let deny = decide_in(Mode::Enforce, Webhook::Validate, &many, &idx);
    let msg = deny.message.as_deref().unwrap_or_default();
    assert!(msg.len() < 4096, "denial {} bytes", msg.len());
    assert!(msg.contains("and 9996 more"), "{msg}");
    let audit = decide_in(Mode::Audit, Webhook::Validate, &many, &idx);
    let total: usize = audit.warnings.iter().map(String::len).sum::<usize>()
        + audit
            .audit_annotations
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    assert!(total < 16 << 10, "audit answer {total} bytes");
    assert!(
        audit
            .audit_annotations
            .iter()
            .any(|(k, v)| k == "drift-total" && v == "10001")
    );
    let mark = decide_in(Mode::Audit, Webhook::Mutate, &many, &idx);
    let size = serde_json::to_vec(&mark.patch).expect("json").len();
    assert!(size < 16 << 10, "mark patch {size} bytes");
    let events: usize = audit.events.iter().map(|e| e.note.len()).sum();
    assert!(events <= 1024, "{events}");

    let mut hostile = update("evil.example.com/x:1\u{1b}[31m\u{202e}");
    hostile.allow_drift = None;
    let v = decide_in(Mode::Enforce, Webhook::Validate, &hostile, &idx);
    let msg = v.message.as_deref().unwrap_or_default();
    assert!(
        !msg.contains('\u{1b}') && !msg.contains('\u{202e}'),
        "{msg:?}"
    );
    assert!(msg.contains("\\u{1b}"), "{msg}");
    let v = decide_in(Mode::Audit, Webhook::Validate, &hostile, &idx);
    for w in &v.warnings {
        assert!(!w.contains('\u{1b}') && !w.contains('\u{202e}'), "{w:?}");
    }
}
