//! Image-valued paths in Helm values, and stale image pins across release revisions.
//!
//! # The problem
//!
//! Helm persists the user-supplied values of every revision in the release record
//! (`release.config`). A plain `helm upgrade` without `-f`/`--set` copies the previous
//! revision's `config` verbatim; `--reuse-values` and `--reset-then-reuse-values` merge it under
//! the new CLI values (see [`coalesce::reuse_values`]). So an old
//! `--set image.tag=11` silently survives every later upgrade and keeps overriding the chart's
//! own default long after the chart moved on. This module finds such *stale pins* at the moment
//! Helm writes the new revision (status `pending-upgrade`/`pending-rollback`), before any
//! workload is touched.
//!
//! # Why only image-valued paths
//!
//! Values hold passwords, tokens and connection strings. helm-guard may only ever print the
//! values that decide which image runs, so [`image_paths`] is the single gate between a values
//! tree and anything that leaves the process, and everything downstream (the per-revision
//! summary kept in memory, the analysis, the messages) only sees its output. It collects:
//!
//! * scalars under the keys `image`, `tag`, `repository`, `registry`, `digest`, `imageTag`,
//!   `imageName`, `imageRegistry` (plus `imageRepository`, `imageDigest`) at any depth, so
//!   subcharts (`cache.image.tag`) and globals (`global.imageRegistry`) are covered;
//! * every scalar inside an image map — a map under `image`, `images`, `*Image`, `*Images`,
//!   `*_image`, `*-image` — e.g. `image.registry`, `initImage.tag`;
//! * strings anywhere that are themselves image references (`sidecar: "busybox:1.36"`,
//!   `image: "repo/name:tag"`, `x: "repo@sha256:…"`), by a deliberately conservative heuristic
//!   (see [`looks_like_image_ref`]): URLs (`://`), `host:port` pairs and `user:password`-shaped
//!   strings are rejected.
//!
//! Defence in depth, because a key name is only a hint: a value is taken only if it consists of
//! image-reference characters (`[A-Za-z0-9._:/@+-]`, no `://`, an `@` only before a digest
//! algorithm) and is at most 512 bytes; scalars whose own key looks secret (`pass`, `secret`,
//! `token`, `cred`, `auth`, `key`, `cert`, `user`, …) are never taken, subtrees under
//! `password`/`secret`/`token`/`credential` keys are not entered, and the free-form image
//! reference heuristic is switched off below any secret-, auth-, user- or `env`-looking key
//! (environment lists carry arbitrary `value:` strings). Numbers count
//! (`tag: 11` → `"11"`); booleans and nulls never decide an image and are skipped.
//!
//! # Paths
//!
//! A path is written the way `helm --set` reads it, so it can be pasted into the fix command:
//! map keys joined with `.`, list elements as `[i]` (`sidecars[0].image`). Inside a key, the
//! characters `\`, `.`, `[`, `]`, `=` and `,` are escaped with a backslash (`--set` syntax:
//! Helm's `strvals` parser treats `\x` as a literal `x`), e.g. the key `a.b` under `labels`
//! is `labels.a\.b`. [`split_path`] inverts [`join_path`] exactly. Keys with control characters
//! or longer than 253 bytes are skipped altogether.
//!
//! # Provenance: when was a value first set?
//!
//! For each image-valued path `P` in the new revision's `config` the analysis walks the
//! release's history backwards, starting at the revision Helm upgraded *from* (Helm's
//! `current`: the newest `deployed` revision, else the newest one), then through older
//! revisions by number, skipping `failed` and `pending-*` ones (they never became the basis of a
//! later revision). The walk continues while `config` holds the same value at `P`; the oldest
//! revision reached is `K`, "the revision the pin was set in". If the parent already differs,
//! the value was set fresh in this upgrade and nothing is said. A user who re-sends the same
//! `--set` on every upgrade looks exactly like implicit reuse (the two are indistinguishable in
//! the stored records) and is treated as a carried pin.
//!
//! A pin is stale when it was carried over (`K` is older than the new revision), differs from
//! the new chart's default at `P`, and the chart changed since `K` (chart name/version, or the
//! default at `P`). Nothing is reported for a first install.
//!
//! # Recognising `--reuse-values`
//!
//! Under `--reuse-values` Helm overwrites the new chart's `values` with the *old* coalesced
//! values (`CoalesceValues(oldChart, oldConfig)`) and stores those as the new revision's
//! `chart.values`: the new chart's real defaults are gone from the record. The full values of
//! the previous revision are long gone when the new one arrives, so [`ValuesSummary`] keeps,
//! per revision, the digests and image paths of its coalesced values; [`reused`] compares the
//! new revision's `chart.values` with them (see `summary.rs` for the two rules, and why
//! subcharts and Helm's differing null handling do not fool them). For such a revision the
//! chart default at `P` is unknown; a carried pin is then stale when the chart version changed
//! since `K`, and the warning says that the new chart's defaults were discarded.
//!
//! For the same reason as the second rule — `processImportValues` storing
//! `CoalesceValues(chart, nil)` — the stored `chart.values` of an umbrella chart already
//! contains its subcharts' defaults, so the chart default at `cache.image.tag` is known
//! without loading the subchart.
//!
//! # The advice
//!
//! `helm upgrade <release> <chart> --reset-values` drops the whole persisted `config`; it is
//! the right fix only when *every* non-null leaf of the new `config` is one of the stale pins
//! found (nothing else would be lost). Otherwise the advice is
//! `--reset-then-reuse-values --set P=<new default>` (Helm ≥ 3.14), which keeps the rest of the
//! persisted values and the new chart's defaults. When the default is unknown (under
//! `--reuse-values`) or empty, it is `--set P=null`, which deletes the pin so the chart default
//! applies (`CoalesceTables` deletes a user key set to `null`).

mod advice;
pub mod coalesce;
mod path;
mod pins;
mod scan;
mod summary;

pub use crate::image::looks_like_image_ref;
pub use advice::drop_command;
pub use path::{PathSegment, escape_key, join_path, split_path};
pub use pins::{Advice, RevisionValues, StalePin, stale_pins};
pub use scan::{count_leaves, image_paths};
pub use summary::{Persisted, ValuesSummary, analyze, persisted, reused, unread_in_analysis};

/// One image-valued path and its value, e.g. `("cache.image.tag", "7.2.4")`.
pub type ImageValue = (String, String);

/// Maximum nesting followed by [`image_paths`]; deeper values are ignored.
pub(crate) const MAX_DEPTH: usize = 64;
/// Maximum number of image values collected from one values tree.
pub(crate) const MAX_IMAGE_VALUES: usize = 4096;
/// Longest key followed (a DNS subdomain; Helm values keys are never near this).
pub(crate) const MAX_KEY_LEN: usize = 253;

#[cfg(test)]
mod tests;
