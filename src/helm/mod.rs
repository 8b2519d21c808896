//! Helm release records, and the compact index the guard keeps of each one.
//!
//! Helm stores every revision of a release as a Secret `sh.helm.release.v1.<name>.v<N>` (type
//! `helm.sh/release.v1`) or, with `HELM_DRIVER=configmap`, a ConfigMap of the same name. The
//! record is JSON → gzip → base64, put in `data.release` (so a Secret carries it base64'd twice
//! on the wire). The JSON holds the rendered manifest, the user-supplied values (`config`), the
//! chart's defaults and metadata — including every password the chart was installed with.
//!
//! The guard therefore decodes a record exactly once, when it learns of it, reduces it to a
//! [`RevisionIndex`] — for each workload the chart renders, its containers and their images —
//! and drops the rest. Nothing else from a release outlives [`decode`]. Decoding is defensive:
//! records are written by whoever may write Secrets in a namespace, so sizes are bounded,
//! every failure is a typed [`DecodeError`] naming the object (never its content), and the
//! record must agree with the object holding it (name, namespace, revision).
//!
//! ```text
//! Secret/ConfigMap ──decode──> DecodedRelease ──index──> RevisionIndex (kept)
//!                     (bounded gunzip, JSON)     (manifest → workloads → images)
//! ```

mod decode;
mod manifest;
mod prune;
pub mod record;

use std::sync::Arc;

pub use decode::{DecodeError, DecodeLimits, DecodedRelease, RecordKind, RecordSource, decode};
pub(crate) use decode::{describe, json_category};
pub use manifest::{ManifestIndex, index_manifest, pruned_agrees, split_manifests};

pub use crate::release::{ReleaseKey, Status, WorkloadKey};
use crate::values::ValuesSummary;
use crate::workload::Container;

/// One workload the chart renders, with the images of its containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadImages {
    pub key: WorkloadKey,
    pub containers: Box<[Container]>,
}

/// Chart name and version of a revision.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ChartRef {
    pub name: Box<str>,
    pub version: Box<str>,
}

/// What the guard keeps of one revision: identity, status and rendered images. Small and
/// immutable; shared behind an `Arc` between the store and in-flight decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionIndex {
    pub release: ReleaseKey,
    pub revision: u32,
    pub status: Status,
    pub chart: ChartRef,
    /// Sorted by key, for binary search.
    pub workloads: Box<[WorkloadImages]>,
    /// Manifest documents that did not parse (counted, never shown).
    pub unparsable_documents: u32,
    /// Image-valued paths of `config` and `chart.values`, for the stale-pin analysis.
    pub values: ValuesSummary,
}

impl RevisionIndex {
    /// Reduces a decoded release to its index. Objects without a namespace in the manifest
    /// belong to the release namespace, as Helm's resource builder defaults them.
    pub fn from_decoded(release: &DecodedRelease) -> Arc<Self> {
        // A superseded revision is never judged against again (a newer one is deployed), so
        // its manifest — most of the decoding cost — is not parsed at all; its values are.
        let ManifestIndex {
            mut workloads,
            unparsable,
            ..
        } = if release.status == Status::Superseded {
            ManifestIndex::default()
        } else {
            index_manifest(&release.manifest, &release.key.namespace)
        };
        let mut values = ValuesSummary::of(
            release.revision,
            &release.chart.name,
            &release.chart.version,
            release.status,
            &release.config,
            &release.chart_values,
        );
        if release.status == Status::Superseded {
            values.compact();
        }
        workloads.sort_by(|a, b| a.key.cmp(&b.key));
        // A chart rendering the same object twice is broken; the API keeps the last write.
        workloads.dedup_by(|later, earlier| {
            if later.key == earlier.key {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        Arc::new(Self {
            release: release.key.clone(),
            revision: release.revision,
            status: release.status,
            chart: release.chart.clone(),
            workloads: workloads.into_boxed_slice(),
            unparsable_documents: unparsable,
            values,
        })
    }

    /// A superseded revision known from its object's labels alone, its record not read (a
    /// cold start defers them: no decision is judged against one, and the stale-value
    /// analysis says when it would need one, see [`crate::values::unread_in_analysis`]).
    pub fn unread(release: ReleaseKey, revision: u32) -> Arc<Self> {
        Arc::new(Self {
            release,
            revision,
            status: Status::Superseded,
            chart: ChartRef::default(),
            workloads: Box::default(),
            unparsable_documents: 0,
            values: ValuesSummary::unread(revision),
        })
    }

    /// Whether the record was read (not an [`Self::unread`] stand-in).
    pub fn is_read(&self) -> bool {
        self.values.is_read()
    }

    pub fn workload(&self, key: &WorkloadKey) -> Option<&WorkloadImages> {
        self.workloads
            .binary_search_by(|w| w.key.cmp(key))
            .ok()
            .map(|i| &self.workloads[i])
    }
}
