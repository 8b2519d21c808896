//! What the store keeps of a revision's values, and the analyses that run on it.
//!
//! Decoding a release record is the only moment the full values are at hand. [`ValuesSummary`]
//! keeps what the stale-pin analysis needs afterwards: the image-valued paths of `config` and
//! `chart.values` ([`RevisionValues`]), plus two digests and the image-valued paths of the
//! coalesced values, from which the `--reuse-values` fingerprint of the *next* revision can be
//! computed without the previous revision's values:
//!
//! - `chart.values(N+1)` digest equal to the coalesced digest of N: `--reuse-values` for sure;
//! - otherwise, the image paths of the coalesced values of N all appear in `chart.values(N+1)`
//!   and one of N's own pins was merged into `chart.values(N+1)` over a different default of
//!   N: also `--reuse-values` (an umbrella chart, whose stored values gain subchart defaults).
//!
//! Digests cover the values with nulls removed (Helm versions differ in how they keep nulls).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::Value;

use super::coalesce::coalesce_values;
use super::{ImageValue, RevisionValues, StalePin, image_paths, stale_pins};
use crate::release::Status;

/// The values-derived part of a revision's index entry. Image references and digests only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValuesSummary {
    pub values: RevisionValues,
    coalesced_images: Vec<ImageValue>,
    coalesced_digest: u64,
    chart_values_digest: u64,
    compacted: bool,
    /// The record was not read (a superseded revision known from its labels at a cold
    /// start): nothing above is known but the revision and its status.
    unread: bool,
}

impl ValuesSummary {
    /// A revision known only from its object's labels: superseded, not read. An analysis that
    /// would consult it says so ([`unread_in_analysis`]) instead of guessing.
    pub fn unread(revision: u32) -> Self {
        Self {
            values: RevisionValues {
                revision,
                chart_name: String::new(),
                chart_version: String::new(),
                status: Status::Superseded,
                config_images: no_images(),
                chart_default_images: no_images(),
                config_leaf_count: 0,
                reused_values: false,
            },
            coalesced_images: Vec::new(),
            coalesced_digest: 0,
            chart_values_digest: 0,
            compacted: true,
            unread: true,
        }
    }

    /// Whether the record behind this summary was read (see [`Self::unread`]).
    pub fn is_read(&self) -> bool {
        !self.unread
    }

    /// Drops what only the revision an upgrade starts from needs, once a newer revision is
    /// deployed: the coalesced image paths behind the `--reuse-values` fingerprint, and the
    /// chart defaults at paths its own `config` does not set (the stale-pin walk only ever
    /// asks an older revision for the default at a path it pinned).
    pub fn compact(&mut self) {
        if self.compacted {
            return;
        }
        self.coalesced_images = Vec::new();
        let v = &mut self.values;
        if v.chart_default_images
            .iter()
            .any(|(p, _)| v.config_value(p).is_none())
        {
            let kept: Vec<ImageValue> = v
                .chart_default_images
                .iter()
                .filter(|(p, _)| v.config_value(p).is_some())
                .cloned()
                .collect();
            v.chart_default_images = kept.into();
        }
        self.compacted = true;
    }

    /// Whether [`Self::compact`] ran.
    pub fn is_compact(&self) -> bool {
        self.compacted
    }

    /// Summarises a decoded revision's values.
    pub fn of(
        revision: u32,
        chart_name: &str,
        chart_version: &str,
        status: Status,
        config: &Value,
        chart_values: &Value,
    ) -> Self {
        let coalesced = coalesce_values(chart_values, config);
        Self {
            values: RevisionValues::summarize(
                revision,
                chart_name,
                chart_version,
                status,
                config,
                chart_values,
                false,
            ),
            // A superseded revision is compacted at once (`RevisionIndex::from_decoded`),
            // which drops these: not walked for it.
            coalesced_images: if status == Status::Superseded {
                Vec::new()
            } else {
                image_paths(&coalesced)
            },
            coalesced_digest: digest(&coalesced),
            chart_values_digest: digest(chart_values),
            compacted: false,
            unread: false,
        }
    }
}

/// One shared empty list for every unread revision (the store compares lists by pointer
/// first when it shares them).
fn no_images() -> Arc<[ImageValue]> {
    static EMPTY: std::sync::LazyLock<Arc<[ImageValue]>> =
        std::sync::LazyLock::new(|| Arc::from(Vec::new()));
    EMPTY.clone()
}

fn digest(v: &Value) -> u64 {
    fn feed(v: &Value, h: &mut DefaultHasher, depth: usize) {
        if depth > 64 {
            return;
        }
        match v {
            Value::Null => 0u8.hash(h),
            Value::Bool(b) => (1u8, b).hash(h),
            Value::Number(n) => (2u8, n.to_string()).hash(h),
            Value::String(s) => (3u8, s).hash(h),
            Value::Array(a) => {
                (4u8, a.len()).hash(h);
                for x in a {
                    feed(x, h, depth + 1);
                }
            }
            Value::Object(m) => {
                5u8.hash(h);
                // serde_json's map is ordered by key, so the walk is canonical.
                for (k, x) in m.iter().filter(|(_, x)| !x.is_null()) {
                    k.hash(h);
                    feed(x, h, depth + 1);
                }
            }
        }
    }
    let mut h = DefaultHasher::new();
    feed(v, &mut h, 0);
    h.finish()
}

/// Whether `new` was written by `helm upgrade --reuse-values` on top of `parent`.
pub fn reused(parent: &ValuesSummary, new: &ValuesSummary) -> bool {
    if new.chart_values_digest == parent.coalesced_digest {
        return true;
    }
    let all_present = !parent.coalesced_images.is_empty()
        && parent
            .coalesced_images
            .iter()
            .all(|(p, v)| new.values.chart_default(p) == Some(v.as_str()));
    let pin_merged = parent.values.config_images.iter().any(|(p, v)| {
        new.values.chart_default(p) == Some(v.as_str())
            && parent.values.chart_default(p) != Some(v.as_str())
    });
    all_present && pin_merged
}

/// Helm's `current` for an upgrade to `new`: the newest deployed revision before it, else
/// the newest one.
fn parent<'a>(history: &[&'a ValuesSummary], new: &ValuesSummary) -> Option<&'a ValuesSummary> {
    let older = || {
        history
            .iter()
            .filter(|s| s.values.revision < new.values.revision)
    };
    older()
        .filter(|s| s.values.status == Status::Deployed)
        .max_by_key(|s| s.values.revision)
        .or_else(|| older().max_by_key(|s| s.values.revision))
        .copied()
}

/// Stale pins of a `pending-upgrade`/`pending-rollback` revision, given the release's other
/// revisions (any order; `new` itself may be among them).
pub fn analyze(history: &[&ValuesSummary], new: &ValuesSummary) -> Vec<StalePin> {
    let mut target = new.values.clone();
    target.reused_values = parent(history, new).is_some_and(|p| reused(p, new));
    let older: Vec<RevisionValues> = history
        .iter()
        .filter(|s| s.values.revision < new.values.revision)
        .map(|s| s.values.clone())
        .collect();
    stale_pins(&older, &target)
}

/// The first revision that [`analyze`] or [`persisted`] of `new` would consult and that was
/// not read ([`ValuesSummary::unread`]), if any: their answers are only right when this is
/// `None`.
///
/// What they consult, and so all that an older revision is needed for: Helm's `current` for
/// `new` (the `--reuse-values` fingerprint), and for each image value of `new`'s `config`,
/// the revisions walking back from there while `config` holds the same value at that path,
/// plus the first one that does not (it ends the walk). Failed and pending revisions are
/// never walked; a `new` without image values in its `config` needs no older revision.
pub fn unread_in_analysis(history: &[&ValuesSummary], new: &ValuesSummary) -> Option<u32> {
    if new.values.config_images.is_empty() {
        return None;
    }
    if let Some(p) = parent(history, new)
        && !p.is_read()
    {
        return Some(p.values.revision);
    }
    let mut lineage: Vec<&ValuesSummary> = history
        .iter()
        .copied()
        .filter(|s| {
            s.values.revision < new.values.revision
                && s.values.status != Status::Failed
                && !s.values.status.is_pending()
        })
        .collect();
    lineage.sort_by_key(|s| std::cmp::Reverse(s.values.revision));
    for (path, value) in new.values.config_images.iter() {
        for s in &lineage {
            if !s.is_read() {
                return Some(s.values.revision);
            }
            if s.values.config_value(path) != Some(value.as_str()) {
                break;
            }
        }
    }
    None
}

/// One image value persisted in a revision's `config`, with its meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    pub path: String,
    pub value: String,
    /// The oldest revision, walking back without a change, whose `config` holds this value.
    pub since_revision: u32,
    /// The chart's default at `path`, when known (unknown under `--reuse-values`).
    pub chart_default: Option<String>,
    /// Whether the value overrides the chart default (`None`: unknown).
    pub overrides: Option<bool>,
    /// The revision was written with `--reuse-values` (chart defaults were discarded).
    pub reuse_values: bool,
}

/// The image values persisted in `newest`'s config: what `helm get values` shows, with the
/// revision each came from and whether it overrides the chart.
pub fn persisted(history: &[&ValuesSummary], newest: &ValuesSummary) -> Vec<Persisted> {
    let reuse = parent(history, newest).is_some_and(|p| reused(p, newest));
    let mut lineage: Vec<&ValuesSummary> = history
        .iter()
        .copied()
        .filter(|s| {
            s.values.revision < newest.values.revision
                && s.values.status != Status::Failed
                && !s.values.status.is_pending()
        })
        .collect();
    lineage.sort_by_key(|s| std::cmp::Reverse(s.values.revision));
    newest
        .values
        .config_images
        .iter()
        .map(|(path, value)| {
            let since = lineage
                .iter()
                .take_while(|s| s.values.config_value(path) == Some(value.as_str()))
                .last()
                .map_or(newest.values.revision, |s| s.values.revision);
            let chart_default = (!reuse)
                .then(|| newest.values.chart_default(path).map(str::to_owned))
                .flatten();
            let overrides = (!reuse).then(|| chart_default.as_deref() != Some(value.as_str()));
            Persisted {
                path: path.clone(),
                value: value.clone(),
                since_revision: since,
                chart_default,
                overrides,
                reuse_values: reuse,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::coalesce::{UpgradeValues, reuse_values};
    use serde_json::json;

    const CANARY: &str = "CANARY-summary-pw";

    fn chart(tag: &str) -> Value {
        json!({"image": {"repository": "bitnami/postgresql", "tag": tag}, "auth": {"password": ""}})
    }

    /// Plays an upgrade with Helm's rules and summarises both sides.
    fn upgrade(
        prev: (&Value, &Value),
        new_chart: &Value,
        cli: Value,
        mode: UpgradeValues,
        version: &str,
        rev: u32,
    ) -> (ValuesSummary, Value, Value) {
        let (config, chart_values) = reuse_values(mode, prev.0, prev.1, new_chart, &cli);
        let s = ValuesSummary::of(
            rev,
            "postgresql",
            version,
            Status::parse("pending-upgrade"),
            &config,
            &chart_values,
        );
        (s, config, chart_values)
    }

    #[test]
    fn reuse_fingerprint_from_summaries_alone() {
        let cfg1 = json!({"image": {"tag": "11"}, "auth": {"password": CANARY}});
        let ch1 = chart("11");
        let r1 = ValuesSummary::of(
            1,
            "postgresql",
            "12.0.0",
            Status::parse("deployed"),
            &cfg1,
            &ch1,
        );
        let cases = [
            (UpgradeValues::ReuseValues, json!({}), true),
            (UpgradeValues::Default, json!({}), false),
            (UpgradeValues::ResetThenReuseValues, json!({}), false),
            (
                UpgradeValues::ResetValues,
                json!({"image": {"tag": "15"}}),
                false,
            ),
        ];
        for (mode, cli, want) in cases {
            let (r2, _, _) = upgrade((&cfg1, &ch1), &chart("15"), cli, mode, "14.0.0", 2);
            assert_eq!(reused(&r1, &r2), want, "{mode:?}");
            let pins = analyze(&[&r1, &r2], &r2);
            let text = format!("{pins:?}{:?}", persisted(&[&r1], &r2));
            assert!(!text.contains(CANARY));
            match mode {
                UpgradeValues::ResetValues => assert!(pins.is_empty()),
                UpgradeValues::ReuseValues => {
                    assert_eq!(pins.len(), 1);
                    assert!(pins[0].reuse_values);
                }
                _ => {
                    assert_eq!(pins.len(), 1, "{mode:?}");
                    assert_eq!(pins[0].chart_default.as_deref(), Some("15"));
                    assert_eq!(pins[0].since_revision, 1);
                }
            }
        }
    }

    #[test]
    fn persisted_values_say_where_they_came_from() {
        let cfg = json!({"image": {"tag": "11"}, "sidecar": "busybox:1.36", "auth": {"password": CANARY}});
        let r1 = ValuesSummary::of(
            1,
            "postgresql",
            "12.0.0",
            Status::parse("superseded"),
            &cfg,
            &chart("11"),
        );
        let r2 = ValuesSummary::of(
            2,
            "postgresql",
            "14.0.0",
            Status::parse("deployed"),
            &cfg,
            &chart("15"),
        );
        let p = persisted(&[&r1, &r2], &r2);
        let tag = p.iter().find(|x| x.path == "image.tag").expect("image.tag");
        assert_eq!((tag.since_revision, tag.overrides), (1, Some(true)));
        assert_eq!(tag.chart_default.as_deref(), Some("15"));
        let side = p.iter().find(|x| x.path == "sidecar").expect("sidecar");
        assert_eq!(side.overrides, Some(true));
        assert!(!format!("{p:?}").contains(CANARY));
    }

    /// What an analysis needs read: Helm's `current` and the walk of each image value of
    /// `config` back to (and including) the first revision that differs.
    #[test]
    fn unread_revisions_an_analysis_would_need() {
        let cfg = |tag: &str| json!({"image": {"tag": tag}, "auth": {"password": CANARY}});
        let rev = |n: u32, status: &str, tag: &str| {
            ValuesSummary::of(
                n,
                "postgresql",
                "12.0.0",
                Status::parse(status),
                &cfg(tag),
                &chart("15"),
            )
        };
        let unread = ValuesSummary::unread;
        let (r1, r2, r3, u1, u2) = (
            rev(1, "superseded", "11"),
            rev(2, "superseded", "11"),
            rev(3, "deployed", "11"),
            unread(1),
            unread(2),
        );
        let r2_other = rev(2, "superseded", "10");
        let new_same = rev(4, "pending-upgrade", "11");
        let new_fresh = rev(4, "pending-upgrade", "16");
        let no_images = ValuesSummary::of(
            4,
            "postgresql",
            "12.0.0",
            Status::parse("pending-upgrade"),
            &json!({"auth": {"password": CANARY}}),
            &chart("15"),
        );
        // (name, history, new, first unread needed)
        let cases: [(&str, Vec<&ValuesSummary>, &ValuesSummary, Option<u32>); 6] = [
            ("all read", vec![&r1, &r2, &r3], &new_same, None),
            (
                "carried pin walks into unread",
                vec![&u1, &u2, &r3],
                &new_same,
                Some(2),
            ),
            (
                "walk ends at a read revision that differs",
                vec![&u1, &r2_other, &r3],
                &new_same,
                None,
            ),
            (
                "fresh value: the parent ends the walk",
                vec![&u1, &u2, &r3],
                &new_fresh,
                None,
            ),
            (
                "no image values: nothing needed",
                vec![&u1, &u2, &r3],
                &no_images,
                None,
            ),
            (
                "unread parent (no deployed revision)",
                vec![&r1, &u2],
                &new_fresh,
                Some(2),
            ),
        ];
        for (name, history, new, want) in cases {
            assert_eq!(unread_in_analysis(&history, new), want, "{name}");
        }
        assert!(!u1.is_read() && r1.is_read());
    }
}
