//! Tables for image-valued paths and stale pins; chains follow Helm's merge rules.
use super::advice::{abbreviate, escape_set_value};
use super::coalesce::{UpgradeValues, coalesce_values, reuse_values};
use super::*;
use crate::release::Status;
use crate::text::{WARNING_MAX as MAX_WARNING_LEN, WARNING_SOFT as SOFT_WARNING_LEN, warning};
use serde_json::{Value, json};

/// The simulator's oracle for `--reuse-values`, from the full values of both revisions (the
/// store never has them; it uses [`reused`] on summaries).
/// Whether revision N+1 was written by `helm upgrade --reuse-values`, from the full decoded
/// values of the revision Helm upgraded from (N) and of the new one: `chart.values(N+1)`
/// contains every non-null leaf of `CoalesceValues(chart.values(N), config(N))`.
fn reuse_values_fingerprint(
    prev_chart_values: &Value,
    prev_config: &Value,
    new_chart_values: &Value,
) -> bool {
    let expected = coalesce_values(prev_chart_values, prev_config);
    contains_non_null(new_chart_values, &expected, 0)
}

/// `big` holds every non-null leaf of `small` (maps compared key by key, lists whole).
fn contains_non_null(big: &Value, small: &Value, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match (big, small) {
        (_, Value::Null) => true,
        (b, Value::Object(s)) => s.iter().all(|(k, sv)| {
            // A missing `chart.values` (not a map) holds nothing.
            sv.is_null()
                || b.get(k)
                    .is_some_and(|bv| contains_non_null(bv, sv, depth + 1))
        }),
        (b, s) => b == s,
    }
}

fn fit(line: String) -> String {
    warning(&line)
}

const CANARY: &str = "CANARY-s3cr3t-do-not-print";
const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn pairs(list: &[(&str, &str)]) -> Vec<ImageValue> {
    list.iter()
        .map(|(p, v)| (p.to_string(), v.to_string()))
        .collect()
}

// -- image_paths ---------------------------------------------------------------------

#[test]
fn image_paths_table() {
    let cases: Vec<(&str, Value, Vec<ImageValue>)> = vec![
        (
            "image map",
            json!({"image": {"registry": "docker.io", "repository": "bitnami/postgresql",
                             "tag": "11.22.0-debian-11-r4", "digest": "",
                             "pullPolicy": "IfNotPresent", "debug": false}}),
            pairs(&[
                ("image.digest", ""),
                ("image.pullPolicy", "IfNotPresent"),
                ("image.registry", "docker.io"),
                ("image.repository", "bitnami/postgresql"),
                ("image.tag", "11.22.0-debian-11-r4"),
            ]),
        ),
        (
            "subchart and global",
            json!({"global": {"imageRegistry": "mirror.local:5000", "storageClass": "fast"},
                   "cache": {"image": {"tag": "7.2.4"}, "replicas": 2}}),
            pairs(&[
                ("cache.image.tag", "7.2.4"),
                ("global.imageRegistry", "mirror.local:5000"),
            ]),
        ),
        (
            "number tag",
            json!({"image": {"tag": 11}, "replicas": 3}),
            pairs(&[("image.tag", "11")]),
        ),
        (
            "string refs anywhere",
            json!({"sidecar": "busybox:1.36", "image": "repo/name:tag",
                   "exporter": {"img": "quay.io/prometheus/node-exporter:v1.8.0"},
                   "pinned": format!("ghcr.io/org/app@{DIGEST_A}")}),
            pairs(&[
                ("exporter.img", "quay.io/prometheus/node-exporter:v1.8.0"),
                ("image", "repo/name:tag"),
                ("pinned", &format!("ghcr.io/org/app@{DIGEST_A}")),
                ("sidecar", "busybox:1.36"),
            ]),
        ),
        (
            "not image refs",
            json!({"url": "https://charts.example.com:443/x", "host": "db.example.com:5432",
                   "cache": "redis:6379", "local": "localhost:8080", "msg": "hello world:1",
                   "pair": "admin:hunter2", "time": "12:30", "name": "postgres",
                   "ratio": "1:2", "repository": "https://github.com/org/repo"}),
            vec![],
        ),
        (
            "lists",
            json!({"extraContainers": [{"name": "a", "image": "busybox:1.36"},
                                       {"name": "b", "image": {"tag": "2"}}],
                   "images": ["nginx:1.27", "x"]}),
            pairs(&[
                ("extraContainers[0].image", "busybox:1.36"),
                ("extraContainers[1].image.tag", "2"),
                ("images[0]", "nginx:1.27"),
                ("images[1]", "x"),
            ]),
        ),
        (
            "*Image keys",
            json!({"initImage": {"tag": "3"}, "metricsImage": "exporter:0.15",
                   "volume_permissions_image": {"repository": "os-shell"}}),
            pairs(&[
                ("initImage.tag", "3"),
                ("metricsImage", "exporter:0.15"),
                ("volume_permissions_image.repository", "os-shell"),
            ]),
        ),
        (
            "dotted keys escaped",
            json!({"podLabels": {"app.kubernetes.io/image": "nginx:1.27"},
                   "a.b": {"image": {"tag": "1"}}}),
            pairs(&[
                ("a\\.b.image.tag", "1"),
                ("podLabels.app\\.kubernetes\\.io/image", "nginx:1.27"),
            ]),
        ),
        (
            "secrets never",
            json!({"image": {"tag": "1", "password": CANARY, "pullSecrets": [CANARY],
                             "token": "sha256"},
                   "auth": {"password": CANARY, "sidecar": "busybox:1.36"},
                   "basicAuthUser": format!("admin:1{CANARY}"),
                   "users": format!("bob:1{CANARY}"),
                   "env": [{"name": "X", "value": "app:1.0"}],
                   "dsn": format!("postgres://u:{CANARY}@h:5432/db"),
                   "tag": format!("u:{CANARY}@host"),
                   "imageCredentials": {"registry": "r.io", "username": "u", "password": CANARY}}),
            // `imageCredentials` is a credentials subtree: not entered at all.
            pairs(&[("image.tag", "1")]),
        ),
        ("non-object root", json!("busybox:1.36"), vec![]),
        ("null", Value::Null, vec![]),
    ];
    for (name, values, want) in cases {
        assert_eq!(image_paths(&values), want, "{name}");
    }
}

#[test]
fn looks_like_image_ref_table() {
    let yes = [
        "busybox:1.36",
        "postgres:15",
        "nginx:latest",
        "nginx:stable-alpine",
        "node:v20.1",
        "repo/name:tag",
        "docker.io/library/postgres:15",
        "registry.local:5000/team/app:1.2.3",
        "localhost:5000/app:dev",
        &format!("app@{DIGEST_A}"),
        &format!("ghcr.io/o/a:1.0@{DIGEST_B}"),
    ];
    let no = [
        "",
        "busybox",
        "repo/name",
        "http://x.io/a:1",
        "db.example.com:5432",
        "redis:6379",
        "admin:hunter2",
        "a b:1",
        "Repo/Name:1",
        "app@sha256:short",
        "user:pw@host:1",
        "12:30",
        "x:-1",
        "/abs:1",
        "a//b:1",
    ];
    for s in yes {
        assert!(looks_like_image_ref(s), "should be a ref: {s}");
    }
    for s in no {
        assert!(!looks_like_image_ref(s), "should not be a ref: {s}");
    }
}

#[test]
fn path_round_trip() {
    let segs = vec![
        PathSegment::Key("a.b".into()),
        PathSegment::Key("c\\d".into()),
        PathSegment::Index(3),
        PathSegment::Key("x=y,z[0]".into()),
        PathSegment::Key(String::new()),
        PathSegment::Key("tag".into()),
    ];
    let p = join_path(&segs);
    assert_eq!(p, "a\\.b.c\\\\d[3].x\\=y\\,z\\[0\\]..tag");
    assert_eq!(split_path(&p), Some(segs));
    assert_eq!(
        split_path("cache.image.tag"),
        Some(vec![
            PathSegment::Key("cache".into()),
            PathSegment::Key("image".into()),
            PathSegment::Key("tag".into()),
        ])
    );
    for bad in ["a[x]", "a[1", "a\\", "a=b", "a[1]b"] {
        assert_eq!(split_path(bad), None, "{bad}");
    }
    // A leading empty key keeps its dot (fuzz finding: `[Key(""), Key("b")]` joined to `b`,
    // which names another value, and a fix command would have pointed at it).
    let lead = vec![
        PathSegment::Key(String::new()),
        PathSegment::Key("b".into()),
    ];
    assert_eq!(join_path(&lead), ".b");
    assert_eq!(split_path(".b"), Some(lead));
    // Every path image_paths produces splits and re-joins to itself.
    let v = json!({"a.b": {"image": "x:1"}, "l": [{"image": {"tag": "2"}}], "w[": {"tag": "3"}, "": {"image": "e:1"}});
    for (p, _) in image_paths(&v) {
        let segs = split_path(&p).unwrap_or_default();
        assert_eq!(join_path(&segs), p);
    }
}

#[test]
fn count_leaves_table() {
    let cases = [
        (json!({}), 0),
        (json!({"a": null}), 0),
        (json!({"image": {"tag": "1"}}), 1),
        (json!({"a": 1, "b": {"c": [1, 2], "d": []}}), 4),
    ];
    for (v, n) in cases {
        assert_eq!(count_leaves(&v), n, "{v}");
    }
}

// -- revision chains built with Helm's merge rules -----------------------------------

#[derive(Clone)]
struct Chart {
    name: &'static str,
    version: &'static str,
    values: Value,
}

fn pg(version: &'static str, tag: &str) -> Chart {
    Chart {
        name: "postgresql",
        version,
        values: json!({
            "global": {"imageRegistry": "", "storageClass": ""},
            "image": {"registry": "docker.io", "repository": "bitnami/postgresql",
                      "tag": tag, "digest": "", "pullPolicy": "IfNotPresent"},
            "metrics": {"image": {"repository": "bitnami/postgres-exporter", "tag": "0.15.0"}},
            "auth": {"postgresPassword": ""},
            "primary": {"persistence": {"size": "8Gi"}}
        }),
    }
}

/// One stored revision, in full, as Helm would write it.
struct Stored {
    revision: u32,
    status: String,
    chart: Chart,
    config: Value,
    chart_values: Value,
    reused: bool,
}

impl Stored {
    fn summary(&self) -> RevisionValues {
        RevisionValues::summarize(
            self.revision,
            self.chart.name,
            self.chart.version,
            Status::parse(&self.status),
            &self.config,
            &self.chart_values,
            self.reused,
        )
    }
}

#[derive(Default)]
struct Release {
    revs: Vec<Stored>,
}

impl Release {
    fn history(&self) -> Vec<RevisionValues> {
        self.revs.iter().map(Stored::summary).collect()
    }

    fn next_revision(&self) -> u32 {
        self.revs.last().map_or(1, |r| r.revision + 1)
    }

    /// Helm's `current` for an upgrade: newest deployed, else newest.
    fn current(&self) -> Option<&Stored> {
        self.revs
            .iter()
            .rev()
            .find(|r| r.status == "deployed")
            .or(self.revs.last())
    }

    fn install(chart: &Chart, cli: Value) -> (Self, Vec<StalePin>) {
        let mut rel = Release::default();
        let new = Stored {
            revision: 1,
            status: "pending-install".into(),
            chart: chart.clone(),
            config: cli,
            chart_values: chart.values.clone(),
            reused: false,
        };
        let pins = stale_pins(&rel.history(), &new.summary());
        rel.commit(new, "deployed");
        (rel, pins)
    }

    /// `helm upgrade` in `mode` with `-f/--set` values `cli`; analyses the pending
    /// revision against the history, then records the outcome.
    fn upgrade(
        &mut self,
        mode: UpgradeValues,
        chart: &Chart,
        cli: Value,
        outcome: &str,
    ) -> (RevisionValues, Vec<StalePin>) {
        let Some(cur) = self.current() else {
            panic!("upgrade without a release");
        };
        let (config, chart_values) =
            reuse_values(mode, &cur.config, &cur.chart_values, &chart.values, &cli);
        let reused = reuse_values_fingerprint(&cur.chart_values, &cur.config, &chart_values);
        let new = Stored {
            revision: self.next_revision(),
            status: "pending-upgrade".into(),
            chart: chart.clone(),
            config,
            chart_values,
            reused,
        };
        let summary = new.summary();
        let pins = stale_pins(&self.history(), &summary);
        self.commit(new, outcome);
        (summary, pins)
    }

    /// `helm rollback <rel> <to>`: a new revision with the target's chart and config.
    fn rollback(&mut self, to: u32) -> Vec<StalePin> {
        let Some(target) = self.revs.iter().find(|r| r.revision == to) else {
            panic!("no revision {to}");
        };
        let new = Stored {
            revision: self.next_revision(),
            status: "pending-rollback".into(),
            chart: target.chart.clone(),
            config: target.config.clone(),
            chart_values: target.chart_values.clone(),
            reused: false,
        };
        let pins = stale_pins(&self.history(), &new.summary());
        self.commit(new, "deployed");
        pins
    }

    fn commit(&mut self, mut new: Stored, outcome: &str) {
        if outcome == "deployed" {
            for r in &mut self.revs {
                if r.status == "deployed" {
                    r.status = "superseded".into();
                }
            }
        }
        new.status = outcome.into();
        self.revs.push(new);
    }
}

fn paths(pins: &[StalePin]) -> Vec<(&str, &str, u32)> {
    pins.iter()
        .map(|p| (p.path.as_str(), p.pinned.as_str(), p.since_revision))
        .collect()
}

/// The seed story: install, pin 11 by --set at revision 2, chart bumps afterwards.
fn pinned_release() -> Release {
    let (mut rel, pins) = Release::install(&pg("12.1.0", "15.4.0-debian-11-r0"), json!({}));
    assert!(pins.is_empty());
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &pg("12.1.0", "15.4.0-debian-11-r0"),
        json!({"image": {"tag": "11.22.0-debian-11-r4"},
               "auth": {"postgresPassword": CANARY}}),
        "deployed",
    );
    assert!(pins.is_empty(), "set fresh: {pins:?}");
    rel
}

#[test]
fn first_install_never_warns() {
    let (_, pins) = Release::install(
        &pg("14.0.0", "16.1.0-debian-12-r15"),
        json!({"image": {"tag": "11"}}),
    );
    assert!(pins.is_empty());
    // Also when called with an empty history for a later revision number.
    let new = RevisionValues::summarize(
        3,
        "postgresql",
        "14.0.0",
        Status::PendingUpgrade,
        &json!({"image": {"tag": "11"}}),
        &json!({"image": {"tag": "16"}}),
        false,
    );
    assert!(stale_pins(&[], &new).is_empty());
}

#[test]
fn implicit_reuse_carries_stale_pin() {
    let mut rel = pinned_release();
    let (new, pins) = rel.upgrade(
        UpgradeValues::Default,
        &pg("14.0.0", "16.1.0-debian-12-r15"),
        json!({}),
        "deployed",
    );
    assert!(!new.reused_values);
    assert_eq!(paths(&pins), vec![("image.tag", "11.22.0-debian-11-r4", 2)]);
    let p = &pins[0];
    assert_eq!(p.chart_default.as_deref(), Some("16.1.0-debian-12-r15"));
    assert_eq!(p.since_chart_version, "12.1.0");
    assert_eq!(p.advice, Advice::ResetThenReuseValues);
    assert_eq!(
        p.warning_lines("db", "<chart>"),
        vec![
            "image.tag=11.22.0-debian-11-r4 pinned since revision 2; chart 14.0.0 default is 16.1.0-debian-12-r15",
            "to follow the chart: helm upgrade db <chart> --reset-then-reuse-values --set image.tag=16.1.0-debian-12-r15",
        ]
    );
    // A further plain upgrade still traces the pin to revision 2.
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &pg("15.0.0", "17.0.0-debian-12-r1"),
        json!({}),
        "deployed",
    );
    assert_eq!(paths(&pins), vec![("image.tag", "11.22.0-debian-11-r4", 2)]);
}

#[test]
fn same_chart_same_default_is_not_stale() {
    let mut rel = pinned_release();
    // Re-deploying the same chart version: the pin was chosen against this very chart.
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &pg("12.1.0", "15.4.0-debian-11-r0"),
        json!({}),
        "deployed",
    );
    assert!(pins.is_empty(), "{pins:?}");
    // New chart whose default equals the pin: nothing to fix.
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &pg("13.0.0", "11.22.0-debian-11-r4"),
        json!({}),
        "deployed",
    );
    assert!(pins.is_empty(), "{pins:?}");
}

#[test]
fn reuse_values_flags_discarded_defaults() {
    let mut rel = pinned_release();
    let (new, pins) = rel.upgrade(
        UpgradeValues::ReuseValues,
        &pg("14.0.0", "16.1.0-debian-12-r15"),
        json!({}),
        "deployed",
    );
    assert!(new.reused_values);
    // The stored "defaults" are the old coalesced values: the pin itself.
    assert_eq!(new.chart_default("image.tag"), Some("11.22.0-debian-11-r4"));
    assert_eq!(paths(&pins), vec![("image.tag", "11.22.0-debian-11-r4", 2)]);
    let p = &pins[0];
    assert!(p.reuse_values);
    assert_eq!(p.chart_default, None);
    let lines = p.warning_lines("db", "<chart>");
    assert_eq!(
        lines[0],
        "image.tag=11.22.0-debian-11-r4 pinned since revision 2; --reuse-values discarded chart 14.0.0 defaults"
    );
    assert_eq!(
        lines[1],
        "to follow the chart: helm upgrade db <chart> --reset-then-reuse-values --set image.tag=null"
    );
    // --reuse-values with a fresh --set is not a pin.
    let (new, pins) = rel.upgrade(
        UpgradeValues::ReuseValues,
        &pg("15.0.0", "17.0.0"),
        json!({"image": {"tag": "17.0.0"}}),
        "deployed",
    );
    assert!(new.reused_values);
    assert!(pins.is_empty(), "{pins:?}");
}

#[test]
fn reuse_values_same_chart_version_is_quiet() {
    let mut rel = pinned_release();
    let (new, pins) = rel.upgrade(
        UpgradeValues::ReuseValues,
        &pg("12.1.0", "15.4.0-debian-11-r0"),
        json!({"primary": {"persistence": {"size": "20Gi"}}}),
        "deployed",
    );
    assert!(new.reused_values);
    assert!(pins.is_empty(), "{pins:?}");
}

#[test]
fn reset_then_reuse_keeps_pin_over_new_default() {
    let mut rel = pinned_release();
    let (new, pins) = rel.upgrade(
        UpgradeValues::ResetThenReuseValues,
        &pg("14.0.0", "16.1.0-debian-12-r15"),
        json!({"primary": {"persistence": {"size": "20Gi"}}}),
        "deployed",
    );
    assert!(!new.reused_values);
    assert_eq!(paths(&pins), vec![("image.tag", "11.22.0-debian-11-r4", 2)]);
    assert_eq!(
        pins[0].chart_default.as_deref(),
        Some("16.1.0-debian-12-r15")
    );
    // Following the advice (`--set image.tag=null`) removes the pin for good.
    let (new, pins) = rel.upgrade(
        UpgradeValues::ResetThenReuseValues,
        &pg("14.0.0", "16.1.0-debian-12-r15"),
        json!({"image": {"tag": null}}),
        "deployed",
    );
    assert!(pins.is_empty());
    assert_eq!(new.config_value("image.tag"), None);
}

#[test]
fn reset_values_drops_pin() {
    let mut rel = pinned_release();
    let (new, pins) = rel.upgrade(
        UpgradeValues::ResetValues,
        &pg("14.0.0", "16.1.0-debian-12-r15"),
        json!({}),
        "deployed",
    );
    assert!(pins.is_empty());
    assert!(new.config_images.is_empty());
    // And nothing comes back on the next plain upgrade.
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &pg("15.0.0", "17.0.0"),
        json!({}),
        "deployed",
    );
    assert!(pins.is_empty());
}

#[test]
fn explicit_new_tag_is_fresh() {
    let mut rel = pinned_release();
    // Plain upgrade with --set: the old config is dropped, the new tag is set fresh.
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &pg("14.0.0", "16.1.0-debian-12-r15"),
        json!({"image": {"tag": "15.5.0"}}),
        "deployed",
    );
    assert!(pins.is_empty(), "{pins:?}");
    // Same with --reset-then-reuse-values.
    let (_, pins) = rel.upgrade(
        UpgradeValues::ResetThenReuseValues,
        &pg("15.0.0", "17.0.0"),
        json!({"image": {"tag": "16.0.0"}}),
        "deployed",
    );
    assert!(pins.is_empty(), "{pins:?}");
    // The next chart bump reports it, traced to the revision that set it.
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &pg("16.0.0", "18.0.0"),
        json!({}),
        "deployed",
    );
    assert_eq!(paths(&pins), vec![("image.tag", "16.0.0", 4)]);
}

#[test]
fn reset_values_advice_when_pins_are_all_of_config() {
    let (mut rel, _) = Release::install(&pg("12.1.0", "15.4.0"), json!({}));
    rel.upgrade(
        UpgradeValues::Default,
        &pg("12.1.0", "15.4.0"),
        json!({"image": {"tag": "11"}}),
        "deployed",
    );
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &pg("14.0.0", "16.1.0"),
        json!({}),
        "deployed",
    );
    assert_eq!(paths(&pins), vec![("image.tag", "11", 2)]);
    assert_eq!(pins[0].advice, Advice::ResetValues);
    assert_eq!(
        pins[0].warning_lines("db", "<chart>")[1],
        "to follow the chart: helm upgrade db <chart> --reset-values"
    );
}

#[test]
fn failed_upgrade_is_skipped_in_provenance() {
    let mut rel = pinned_release();
    // Revision 3 fails with a different tag; revision 4 upgrades from revision 2.
    let (_, _) = rel.upgrade(
        UpgradeValues::Default,
        &pg("13.0.0", "16.0.0"),
        json!({"image": {"tag": "12"}}),
        "failed",
    );
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &pg("14.0.0", "16.1.0-debian-12-r15"),
        json!({}),
        "deployed",
    );
    assert_eq!(paths(&pins), vec![("image.tag", "11.22.0-debian-11-r4", 2)]);
}

#[test]
fn rollback() {
    let mut rel = pinned_release();
    // Revision 3: plain upgrade to a new chart with a fresh tag (config replaced).
    rel.upgrade(
        UpgradeValues::Default,
        &pg("14.0.0", "16.1.0-debian-12-r15"),
        json!({"image": {"tag": "16.1.0-debian-12-r15"}}),
        "deployed",
    );
    // Rolling back to revision 2 restores its config and chart deliberately: the value
    // differs from the revision rolled back from, so it counts as set now.
    let pins = rel.rollback(2);
    assert!(pins.is_empty(), "{pins:?}");

    // --atomic style: a failed upgrade (implicit reuse) then a rollback to the previous
    // release; the rollback's config is the previous release's config.
    let mut rel = pinned_release();
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &pg("14.0.0", "16.1.0-debian-12-r15"),
        json!({}),
        "failed",
    );
    assert_eq!(pins.len(), 1);
    let pins = rel.rollback(2);
    assert!(pins.is_empty(), "rollback to the pin's own chart: {pins:?}");

    // A pin carried across chart versions, then a rollback to a revision with a newer
    // chart than the one the pin was set with: still stale there.
    let mut rel = pinned_release();
    rel.upgrade(
        UpgradeValues::Default,
        &pg("14.0.0", "16.1.0"),
        json!({}),
        "deployed",
    );
    rel.upgrade(
        UpgradeValues::Default,
        &pg("15.0.0", "17.0.0"),
        json!({}),
        "deployed",
    );
    let pins = rel.rollback(3);
    assert_eq!(paths(&pins), vec![("image.tag", "11.22.0-debian-11-r4", 2)]);
    assert_eq!(pins[0].chart_version, "14.0.0");
    assert_eq!(pins[0].chart_default.as_deref(), Some("16.1.0"));
}

fn umbrella(version: &'static str, app_tag: &str, cache_tag: &str) -> Chart {
    // Stored chart.values of an umbrella chart include the subcharts' defaults
    // (processImportValues stores CoalesceValues(chart, nil)).
    Chart {
        name: "shop",
        version,
        values: json!({
            "global": {"imageRegistry": ""},
            "image": {"repository": "org/shop", "tag": app_tag},
            "cache": {"image": {"registry": "docker.io", "repository": "bitnami/redis",
                                "tag": cache_tag}, "auth": {"password": ""}}
        }),
    }
}

#[test]
fn subchart_and_global_paths() {
    let (mut rel, _) = Release::install(&umbrella("1.0.0", "1.0", "7.0.0"), json!({}));
    rel.upgrade(
        UpgradeValues::Default,
        &umbrella("1.0.0", "1.0", "7.0.0"),
        json!({"cache": {"image": {"tag": "6.2.14"}, "auth": {"password": CANARY}},
               "global": {"imageRegistry": "mirror.corp:5000"}}),
        "deployed",
    );
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &umbrella("2.0.0", "2.0", "7.2.4"),
        json!({}),
        "deployed",
    );
    assert_eq!(
        paths(&pins),
        vec![
            ("cache.image.tag", "6.2.14", 2),
            ("global.imageRegistry", "mirror.corp:5000", 2),
        ]
    );
    assert_eq!(pins[0].chart_default.as_deref(), Some("7.2.4"));
    assert_eq!(pins[1].chart_default.as_deref(), Some(""));
    assert_eq!(
        pins[1].warning_lines("shop", "org/shop")[0],
        "global.imageRegistry=mirror.corp:5000 pinned since revision 2; chart 2.0.0 default is empty"
    );
    assert_eq!(
        pins[1].warning_lines("shop", "org/shop")[1],
        "to follow the chart: helm upgrade shop org/shop --reset-then-reuse-values --set global.imageRegistry=null"
    );
}

#[test]
fn digest_pins() {
    let chart = |v: &'static str, d: &str| Chart {
        name: "app",
        version: v,
        values: json!({"image": {"repository": "ghcr.io/org/app", "tag": "", "digest": d}}),
    };
    let (mut rel, _) = Release::install(&chart("1.0.0", DIGEST_A), json!({}));
    rel.upgrade(
        UpgradeValues::Default,
        &chart("1.0.0", DIGEST_A),
        json!({"image": {"digest": DIGEST_A}}),
        "deployed",
    );
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &chart("1.1.0", DIGEST_B),
        json!({}),
        "deployed",
    );
    assert_eq!(paths(&pins), vec![("image.digest", DIGEST_A, 2)]);
    assert_eq!(pins[0].advice, Advice::ResetValues);
    let lines = pins[0].warning_lines("app", "oci://ghcr.io/org/charts/app");
    // The summary abbreviates the digests to stay short; the fix keeps the exact value.
    assert!(lines[0].len() <= SOFT_WARNING_LEN, "{}", lines[0]);
    assert!(lines[0].starts_with("image.digest=sha256:aaaaaaaaaaaaaaaaa…"));
    assert!(lines.iter().all(|l| l.len() <= MAX_WARNING_LEN));
    // Empty pins (`digest: ""` from another config) are never reported.
    let (mut rel, _) = Release::install(&chart("1.0.0", DIGEST_A), json!({}));
    rel.upgrade(
        UpgradeValues::Default,
        &chart("1.0.0", DIGEST_A),
        json!({"image": {"digest": ""}}),
        "deployed",
    );
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &chart("1.1.0", DIGEST_B),
        json!({}),
        "deployed",
    );
    assert!(pins.is_empty(), "{pins:?}");
}

#[test]
fn single_string_image_values() {
    let chart = |v: &'static str, img: &str| Chart {
        name: "tool",
        version: v,
        values: json!({"image": img, "sidecar": "busybox:1.36", "replicas": 1}),
    };
    let (mut rel, _) = Release::install(&chart("0.1.0", "org/tool:1.0"), json!({}));
    rel.upgrade(
        UpgradeValues::Default,
        &chart("0.1.0", "org/tool:1.0"),
        json!({"image": "org/tool:0.9", "sidecar": "busybox:1.35", "replicas": 2}),
        "deployed",
    );
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &chart("0.2.0", "org/tool:2.0"),
        json!({}),
        "deployed",
    );
    assert_eq!(
        paths(&pins),
        vec![("image", "org/tool:0.9", 2), ("sidecar", "busybox:1.35", 2)]
    );
    assert_eq!(
        pins[0].warning_lines("t", "<chart>"),
        vec![
            "image=org/tool:0.9 pinned since revision 2; chart 0.2.0 default is org/tool:2.0",
            "to follow the chart: helm upgrade t <chart> --reset-then-reuse-values --set image=org/tool:2.0",
        ]
    );
}

#[test]
fn map_pin_against_string_default_and_missing_default() {
    let (mut rel, _) = Release::install(
        &Chart {
            name: "x",
            version: "1",
            values: json!({"image": "org/x:1"}),
        },
        json!({}),
    );
    rel.upgrade(
        UpgradeValues::Default,
        &Chart {
            name: "x",
            version: "1",
            values: json!({"image": "org/x:1"}),
        },
        json!({"image": {"tag": "0.5"}, "keep": true}),
        "deployed",
    );
    let (_, pins) = rel.upgrade(
        UpgradeValues::Default,
        &Chart {
            name: "x",
            version: "2",
            values: json!({"image": "org/x:2"}),
        },
        json!({}),
        "deployed",
    );
    assert_eq!(paths(&pins), vec![("image.tag", "0.5", 2)]);
    assert_eq!(pins[0].chart_default, None);
    assert_eq!(
        pins[0].warning_lines("x", "<chart>"),
        vec![
            "image.tag=0.5 pinned since revision 2; chart 2 has no default there",
            "to follow the chart: helm upgrade x <chart> --reset-then-reuse-values --set image.tag=null",
        ]
    );
}

#[test]
fn canary_never_leaves() {
    let mut rel = pinned_release();
    let chart = pg("14.0.0", "16.1.0-debian-12-r15");
    let extra = json!({
        "auth": {"password": CANARY, "users": [format!("u:1{CANARY}")]},
        "image": {"pullSecretPassword": CANARY},
        "sidecarCreds": format!("admin:{CANARY}"),
        "env": [{"name": "PW", "value": format!("x/y:1{CANARY}")}],
        "url": format!("https://u:{CANARY}@example.com/x:1"),
        "note": format!("repo/{CANARY}:1"),
    });
    let (_, _) = rel.upgrade(UpgradeValues::ReuseValues, &chart, extra, "deployed");
    let (new, pins) = rel.upgrade(
        UpgradeValues::Default,
        &pg("15.0.0", "17.0.0"),
        json!({}),
        "deployed",
    );
    assert!(!pins.is_empty());
    let mut out = format!("{new:?}\n{pins:?}\n{:?}\n", rel.history());
    for p in &pins {
        out.push_str(&format!("{p}\n"));
        for l in p.warning_lines("db", "<chart>") {
            out.push_str(&l);
            out.push('\n');
        }
    }
    for r in &rel.revs {
        out.push_str(&format!("{:?}\n", image_paths(&r.config)));
        out.push_str(&format!("{:?}\n", image_paths(&r.chart_values)));
    }
    assert!(!out.contains("CANARY"), "{out}");
    assert!(!out.contains("s3cr3t"), "{out}");
}

// -- fingerprint ---------------------------------------------------------------------

#[test]
fn fingerprint_table() {
    let old_chart = json!({"image": {"tag": "1.0", "repository": "r"}, "n": null});
    let old_cfg = json!({"image": {"tag": "0.9"}, "x": {"y": null}});
    let new_chart = json!({"image": {"tag": "2.0", "repository": "r"}});
    let cli = json!({});
    use UpgradeValues::*;
    for (mode, want) in [
        (Default, false),
        (ReuseValues, true),
        (ResetThenReuseValues, false),
        (ResetValues, false),
    ] {
        let (_, stored) = reuse_values(mode, &old_cfg, &old_chart, &new_chart, &cli);
        assert_eq!(
            reuse_values_fingerprint(&old_chart, &old_cfg, &stored),
            want,
            "{mode:?}"
        );
    }
    // Umbrella chart: new subchart defaults merged in afterwards add keys only.
    let (_, mut stored) = reuse_values(ReuseValues, &old_cfg, &old_chart, &new_chart, &cli);
    if let Value::Object(m) = &mut stored {
        m.insert("cache".into(), json!({"image": {"tag": "7"}}));
    }
    assert!(reuse_values_fingerprint(&old_chart, &old_cfg, &stored));
    // Nulls kept by one Helm version and dropped by another do not matter.
    let stored = json!({"image": {"tag": "0.9", "repository": "r"}, "x": {}});
    assert!(reuse_values_fingerprint(&old_chart, &old_cfg, &stored));
    // Unrelated inputs.
    assert!(!reuse_values_fingerprint(
        &json!({"a": 1}),
        &json!({}),
        &json!({"a": 2})
    ));
    assert!(reuse_values_fingerprint(
        &Value::Null,
        &Value::Null,
        &Value::Null
    ));
}

// -- formatting ----------------------------------------------------------------------

#[test]
fn lines_are_bounded_and_safe() {
    let long = "é".repeat(400);
    let pin = StalePin {
        path: format!("a.{long}"),
        pinned: "x".repeat(300),
        since_revision: 1,
        since_chart_version: "1".into(),
        chart_version: "2\n3".into(),
        chart_default: Some("y".repeat(300)),
        reuse_values: false,
        advice: Advice::ResetThenReuseValues,
    };
    for l in pin.warning_lines("rel\u{7}", &long) {
        assert!(l.len() <= MAX_WARNING_LEN, "{}", l.len());
        assert!(!l.chars().any(char::is_control));
    }
    assert!(pin.to_string().len() <= MAX_WARNING_LEN);
    // Paths with escapes are shell-quoted in the fix command.
    let pin = StalePin {
        path: "podLabels.app\\.io/image".into(),
        pinned: "nginx:1.25".into(),
        since_revision: 2,
        since_chart_version: "1".into(),
        chart_version: "2".into(),
        chart_default: Some("nginx:1.27".into()),
        reuse_values: false,
        advice: Advice::ResetThenReuseValues,
    };
    assert_eq!(
        pin.warning_lines("web", "<chart>")[1],
        "to follow the chart: helm upgrade web <chart> --reset-then-reuse-values --set 'podLabels.app\\.io/image=nginx:1.27'"
    );
    assert_eq!(fit("ab".repeat(200)).len(), MAX_WARNING_LEN);
    assert_eq!(abbreviate("abcdef", 3), "abc…");
    assert_eq!(escape_set_value("a,b\\c"), "a\\,b\\\\c");
}
