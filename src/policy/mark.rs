//! The drift mark: `helm-guard.io/drift`, compact JSON on the object that says which
//! containers run an image their chart does not render, since when, by whom and why.
//!
//! The mutating webhook keeps it: set when drift is let through (audit, break-glass), removed
//! when the object matches the chart again, left alone when it already says the same — so a
//! second invocation on its own output yields no patch. Entries for drift recorded earlier and
//! still present keep their original manager, user and time.
//!
//! Bounded: at most [`MAX_ENTRIES`] entries of bounded fields, so the mark always fits the
//! API server's 256 KiB annotation budget whatever the request holds (the audit annotation
//! `drift-total` says how many there were when the list is cut).

use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use serde::{Deserialize, Serialize};

use super::{DRIFT_MARK, Drift};
use crate::text;

/// Most entries a mark (or the `drift` audit annotation) lists.
pub const MAX_ENTRIES: usize = 8;
/// Longest user name or reason recorded.
const WHO_MAX: usize = 200;

/// One entry of the drift mark.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MarkEntry {
    pub container: String,
    /// Empty when the chart renders no container of this name.
    pub chart_image: String,
    pub live_image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl MarkEntry {
    /// Same drift, whoever recorded it and whenever.
    fn same_drift(&self, other: &MarkEntry) -> bool {
        self.container == other.container
            && self.chart_image == other.chart_image
            && self.live_image == other.live_image
            && self.reason == other.reason
    }
}

/// Who records a mark, and when.
#[derive(Clone, Copy, Debug)]
pub struct Recorder<'a> {
    pub manager: Option<&'a str>,
    pub user: &'a str,
    pub now: &'a str,
}

impl Recorder<'_> {
    fn entry(&self, d: &Drift, reason: Option<&str>) -> MarkEntry {
        MarkEntry {
            container: d.container.clone(),
            chart_image: d.chart_image.clone(),
            live_image: d.live_image.clone(),
            manager: self.manager.map(text::field),
            user: text::shown(self.user, WHO_MAX),
            time: text::field(self.now),
            reason: reason.map(|r| text::shown(r, WHO_MAX)),
        }
    }

    /// The mark's JSON for `drifts` (the `drift` audit annotation), bounded.
    pub fn json(&self, drifts: &[Drift], reason: Option<&str>) -> String {
        let entries: Vec<MarkEntry> = drifts
            .iter()
            .take(MAX_ENTRIES)
            .map(|d| self.entry(d, reason))
            .collect();
        serde_json::to_string(&entries).unwrap_or_default()
    }

    /// The patch that makes the mark describe every container now drifting: entries for this
    /// request's violations are new; entries for drift recorded earlier and still present
    /// are kept as they were. No patch when the mark already says the same.
    pub fn patch(
        &self,
        existing_mark: Option<&str>,
        has_annotations: bool,
        current: &[Drift],
        violations: &[Drift],
        reason: Option<&str>,
    ) -> Patch {
        let existing = entries(existing_mark);
        let new: Vec<MarkEntry> = current
            .iter()
            .take(MAX_ENTRIES)
            .map(|d| {
                let violation = violations.contains(d);
                let fresh = self.entry(d, if violation { reason } else { None });
                let keep = existing.iter().find(|e| {
                    if violation {
                        e.same_drift(&fresh)
                    } else {
                        e.container == fresh.container && e.live_image == fresh.live_image
                    }
                });
                keep.cloned().unwrap_or(fresh)
            })
            .collect();
        if existing_mark.is_some() && new == existing {
            return Patch(Vec::new());
        }
        let value = serde_json::to_string(&new).unwrap_or_default();
        let op = if has_annotations {
            AddOperation {
                path: mark_path(),
                value: value.into(),
            }
        } else {
            AddOperation {
                path: pointer(&["metadata", "annotations"]),
                value: serde_json::json!({ DRIFT_MARK: value }),
            }
        };
        Patch(vec![PatchOperation::Add(op)])
    }
}

/// The patch that removes the mark.
pub fn removal() -> Patch {
    Patch(vec![PatchOperation::Remove(RemoveOperation {
        path: mark_path(),
    })])
}

/// The entries of a mark; a mark that does not parse (edited by hand) has none.
pub fn entries(mark: Option<&str>) -> Vec<MarkEntry> {
    mark.and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default()
}

fn pointer(tokens: &[&str]) -> json_patch::jsonptr::PointerBuf {
    json_patch::jsonptr::PointerBuf::from_tokens(tokens.iter().copied())
}

fn mark_path() -> json_patch::jsonptr::PointerBuf {
    pointer(&["metadata", "annotations", DRIFT_MARK])
}
