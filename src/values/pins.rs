//! Stale image pins across a release's revisions: what the store keeps per revision
//! ([`RevisionValues`]) and the walk that finds a persisted value no longer following the
//! chart ([`stale_pins`]).

use std::sync::Arc;

use serde_json::Value;

use super::ImageValue;
use super::path::{PathSegment, split_path};
use super::scan::{count_leaves, image_paths};
use crate::release::Status;

/// What the release store keeps per revision for the stale-pin analysis: chart identity,
/// status, the image-valued paths of `config` and of `chart.values`, and two small facts
/// computed at decode time. Never whole values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionValues {
    pub revision: u32,
    pub chart_name: String,
    pub chart_version: String,
    pub status: Status,
    /// `image_paths(release.config)`, sorted by path.
    pub config_images: Arc<[ImageValue]>,
    /// `image_paths(release.chart.values)`, sorted by path.
    pub chart_default_images: Arc<[ImageValue]>,
    /// `count_leaves(release.config)`.
    pub config_leaf_count: u32,
    /// `chart.values` of this revision are the previous coalesced values (`--reuse-values`),
    /// so `chart_default_images` are not the chart's own defaults.
    pub reused_values: bool,
}

impl RevisionValues {
    /// Reduces a decoded revision to its summary. `reused_values` comes from
    /// [`super::reused`] (false for a first revision).
    pub fn summarize(
        revision: u32,
        chart_name: &str,
        chart_version: &str,
        status: Status,
        config: &Value,
        chart_values: &Value,
        reused_values: bool,
    ) -> Self {
        RevisionValues {
            revision,
            chart_name: chart_name.to_string(),
            chart_version: chart_version.to_string(),
            status,
            config_images: image_paths(config).into(),
            chart_default_images: image_paths(chart_values).into(),
            config_leaf_count: count_leaves(config),
            reused_values,
        }
    }

    /// The value of `config` at `path`, if it is image-valued.
    pub fn config_value(&self, path: &str) -> Option<&str> {
        lookup(&self.config_images, path)
    }

    /// The value of `chart.values` at `path`, if it is image-valued.
    pub fn chart_default(&self, path: &str) -> Option<&str> {
        lookup(&self.chart_default_images, path)
    }
}

fn lookup<'a>(list: &'a [ImageValue], path: &str) -> Option<&'a str> {
    // Lists are sorted by `image_paths`; fall back to a scan if a caller built one unsorted.
    match list.binary_search_by(|(p, _)| p.as_str().cmp(path)) {
        Ok(i) => list.get(i).map(|(_, v)| v.as_str()),
        Err(_) => list
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str()),
    }
}

/// Which command fixes a stale pin (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Advice {
    /// Every value persisted in `config` is a stale pin: drop them all.
    ResetValues,
    /// Keep the other persisted values, override or delete this one.
    ResetThenReuseValues,
}

/// An image value persisted in the new revision's `config` that no longer follows the chart.
/// Holds only image-valued data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalePin {
    /// Values path in `--set` syntax, e.g. `image.tag`.
    pub path: String,
    /// The persisted value.
    pub pinned: String,
    /// The revision whose `config` first held this value (walking back while unchanged).
    pub since_revision: u32,
    /// Chart version of that revision.
    pub since_chart_version: String,
    /// Chart version of the new revision.
    pub chart_version: String,
    /// The new chart's default at `path`; `None` when the chart has none there, or when it is
    /// unknown because of `--reuse-values`.
    pub chart_default: Option<String>,
    /// The new revision was written with `--reuse-values`: the new chart's defaults were
    /// discarded in favour of the old coalesced values.
    pub reuse_values: bool,
    pub advice: Advice,
}

/// Finds stale image pins in `new` (a `pending-upgrade`/`pending-rollback` revision) given the
/// release's earlier revisions (any order; revisions not older than `new` are ignored).
pub fn stale_pins(history: &[RevisionValues], new: &RevisionValues) -> Vec<StalePin> {
    if new.status == Status::PendingInstall {
        return Vec::new();
    }
    let mut hist: Vec<&RevisionValues> = history
        .iter()
        .filter(|r| r.revision < new.revision)
        .collect();
    hist.sort_by_key(|r| std::cmp::Reverse(r.revision));
    hist.dedup_by_key(|r| r.revision);
    // Helm's `current`: the newest deployed revision, else the newest one.
    let parent_idx = hist
        .iter()
        .position(|r| r.status == Status::Deployed)
        .unwrap_or(0);
    let Some((parent, older)) = hist.get(parent_idx..).and_then(|s| s.split_first()) else {
        // First install: nothing was carried.
        return Vec::new();
    };
    let lineage: Vec<&RevisionValues> = std::iter::once(*parent)
        .chain(
            older
                .iter()
                .copied()
                .filter(|r| r.status != Status::Failed && !r.status.is_pending()),
        )
        .collect();

    let mut pins = Vec::new();
    for (path, pinned) in new.config_images.iter() {
        if pinned.is_empty() || !decides_image(path) {
            continue;
        }
        // Walk back while the value is unchanged; `since` is the oldest revision reached.
        let since = lineage
            .iter()
            .take_while(|r| r.config_value(path) == Some(pinned.as_str()))
            .last();
        let Some(since) = since else {
            // Set fresh in this upgrade.
            continue;
        };
        let same_chart =
            since.chart_name == new.chart_name && since.chart_version == new.chart_version;
        let (stale, chart_default) = if new.reused_values {
            (!same_chart, None)
        } else {
            let default = new.chart_default(path);
            let differs = default != Some(pinned.as_str());
            let default_moved = since.chart_default(path) != default;
            (differs && (!same_chart || default_moved), default)
        };
        if stale {
            pins.push(StalePin {
                path: path.clone(),
                pinned: pinned.clone(),
                since_revision: since.revision,
                since_chart_version: since.chart_version.clone(),
                chart_version: new.chart_version.clone(),
                chart_default: chart_default.map(str::to_string),
                reuse_values: new.reused_values,
                advice: Advice::ResetThenReuseValues,
            });
        }
    }
    let all_config_is_stale =
        !pins.is_empty() && u32::try_from(pins.len()).is_ok_and(|n| n == new.config_leaf_count);
    if all_config_is_stale {
        for p in &mut pins {
            p.advice = Advice::ResetValues;
        }
    }
    pins
}

/// Image-map scalars that do not choose the image (`image.pullPolicy`) are not pins.
fn decides_image(path: &str) -> bool {
    let last = match split_path(path).and_then(|s| {
        s.into_iter().rev().find_map(|seg| match seg {
            PathSegment::Key(k) => Some(k),
            PathSegment::Index(_) => None,
        })
    }) {
        Some(k) => k.to_ascii_lowercase(),
        None => return false,
    };
    !last.contains("policy") && !last.contains("debug")
}
