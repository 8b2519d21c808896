//! Image-valued paths in Helm values, and stale image pins across release revisions.
//!
//! # The problem
//!
//! Helm persists the user-supplied values of every revision in the release record
//! (`release.config`). A plain `helm upgrade` without `-f`/`--set` copies the previous
//! revision's `config` verbatim; `--reuse-values` and `--reset-then-reuse-values` merge it under
//! the new CLI values (see [`crate::helm::coalesce::reuse_values`]). So an old
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
//! # Fingerprint of `--reuse-values`
//!
//! Under `--reuse-values` Helm overwrites the new chart's `values` with the *old* coalesced
//! values (`CoalesceValues(oldChart, oldConfig)`) and stores those as the new revision's
//! `chart.values`: the new chart's real defaults are gone from the record. The fingerprint
//! ([`reuse_values_fingerprint`]) recognises this at decode time, when both full values trees
//! are at hand, so the long-lived store only keeps a `bool` per revision. For such a revision
//! the chart default at `P` is unknown; a carried pin is then stale when the chart version
//! changed since `K`, and the warning says that the new chart's defaults were discarded.
//!
//! The comparison is "every non-null leaf of `CoalesceValues(chart.values(N), config(N))` is in
//! `chart.values(N+1)`" rather than strict equality, for two reasons read from Helm's source:
//! `null` handling differs between Helm releases (see `helm::coalesce`), and for a chart with
//! dependencies `ProcessDependenciesWithMerge` afterwards merges the new subcharts' defaults
//! into `chart.Values` (`processImportValues`), adding keys but never changing existing ones.
//! A plain upgrade matches this only if the new chart's defaults already equal the old defaults
//! *and* the old user values everywhere, which real version bumps do not do.
//!
//! For the same reason — `processImportValues` storing `CoalesceValues(chart, nil)` — the stored
//! `chart.values` of an umbrella chart already contains its subcharts' defaults, so the chart
//! default at `cache.image.tag` is known without loading the subchart.
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

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::helm::coalesce::coalesce_values;

mod summary;
pub use summary::{Persisted, ValuesSummary, analyze, persisted, reused};

/// One image-valued path and its value, e.g. `("cache.image.tag", "7.2.4")`.
pub type ImageValue = (String, String);

/// Maximum nesting followed by [`image_paths`]; deeper values are ignored.
const MAX_DEPTH: usize = 64;
/// Maximum number of image values collected from one values tree.
const MAX_IMAGE_VALUES: usize = 4096;
/// Longest value taken as image-valued.
const MAX_VALUE_LEN: usize = 512;
/// Longest key followed (a DNS subdomain; Helm values keys are never near this).
const MAX_KEY_LEN: usize = 253;

/// Hard limit for one warning line: the API server truncates warnings past 256 characters.
pub const MAX_WARNING_LEN: usize = 256;
/// Soft limit for one warning line, so it fits a terminal next to kubectl's/Helm's prefix.
pub const SOFT_WARNING_LEN: usize = 120;

// ------------------------------------------------------------------------------------------
// Paths
// ------------------------------------------------------------------------------------------

/// One step of a values path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// A map key (unescaped).
    Key(String),
    /// A list index.
    Index(usize),
}

/// Escapes a map key for use in a path (`--set` syntax).
pub fn escape_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(c, '\\' | '.' | '[' | ']' | '=' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Joins segments into a path: `a.b\.c[0].d`.
pub fn join_path(segments: &[PathSegment]) -> String {
    let mut out = String::new();
    for (i, seg) in segments.iter().enumerate() {
        match seg {
            PathSegment::Key(k) => {
                // By position, not by what was written: a leading empty key still needs its
                // dot (`.image` is not `image`; found by the `values` fuzz target).
                if i > 0 {
                    out.push('.');
                }
                out.push_str(&escape_key(k));
            }
            PathSegment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Splits a path written by [`join_path`] back into segments; `None` when it is malformed.
pub fn split_path(path: &str) -> Option<Vec<PathSegment>> {
    let mut segs = Vec::new();
    let mut chars = path.chars().peekable();
    // A key is expected at the start and after every '.'.
    let mut expect_key = true;
    while chars.peek().is_some() {
        if expect_key {
            let mut key = String::new();
            while let Some(&c) = chars.peek() {
                match c {
                    '\\' => {
                        chars.next();
                        key.push(chars.next()?);
                    }
                    '.' | '[' => break,
                    ']' | '=' | ',' => return None,
                    _ => {
                        key.push(c);
                        chars.next();
                    }
                }
            }
            segs.push(PathSegment::Key(key));
            expect_key = false;
        }
        match chars.next() {
            None => break,
            Some('.') => {
                expect_key = true;
                if chars.peek().is_none() {
                    // Trailing '.' means a final empty key.
                    segs.push(PathSegment::Key(String::new()));
                }
            }
            Some('[') => {
                let mut digits = String::new();
                loop {
                    match chars.next()? {
                        ']' => break,
                        d if d.is_ascii_digit() => digits.push(d),
                        _ => return None,
                    }
                }
                segs.push(PathSegment::Index(digits.parse().ok()?));
            }
            Some(_) => return None,
        }
    }
    Some(segs)
}

// ------------------------------------------------------------------------------------------
// Image-valued paths
// ------------------------------------------------------------------------------------------

/// The image-deciding values of a values tree, sorted by path. The only view of values that
/// helm-guard keeps or prints (see the module documentation for what is collected and why).
pub fn image_paths(values: &Value) -> Vec<ImageValue> {
    let mut w = Walker::default();
    w.walk(values, None, Ctx::default(), 0);
    let mut out = w.out;
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// Keys whose scalar value decides an image wherever they appear.
fn is_image_key(key: &str) -> bool {
    matches!(
        key,
        "image"
            | "tag"
            | "repository"
            | "registry"
            | "digest"
            | "imageTag"
            | "imageName"
            | "imageRegistry"
            | "imageRepository"
            | "imageDigest"
    ) || is_image_map_key(key)
}

/// Keys whose map (or list) value describes an image: every scalar inside counts.
fn is_image_map_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    lower == "image"
        || lower == "images"
        || key.ends_with("Image")
        || key.ends_with("Images")
        || ["_image", "-image", "_images", "-images"]
            .iter()
            .any(|s| lower.ends_with(s))
}

/// A scalar under such a key is never taken, even inside an image map
/// (`image.pullSecrets`, `image.password`, `imageCredentials.username`, …).
fn is_secretish_leaf(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    [
        "pass", "secret", "token", "cred", "auth", "key", "cert", "private", "salt", "cookie",
        "session", "sign", "user", "login", "dsn", "conn",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// Subtrees under such keys are not entered at all.
fn is_secret_subtree(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "credential"]
        .iter()
        .any(|w| lower.contains(w))
}

/// Below such keys the free-form image-reference heuristic is off (`auth.users[0]: "u:1x"`).
fn disables_heuristic(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    [
        "pass", "secret", "token", "cred", "auth", "user", "login", "key", "env",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

#[derive(Clone, Copy, Default)]
struct Ctx {
    /// Inside a map/list under an image-map key.
    in_image_map: bool,
    /// The nearest key is an image key (covers list elements under it too).
    at_image_key: bool,
    /// A secret- or auth-looking key is an ancestor.
    heuristic_off: bool,
}

impl Ctx {
    fn enter(self, key: &str) -> Ctx {
        Ctx {
            in_image_map: self.in_image_map || is_image_map_key(key),
            at_image_key: is_image_key(key),
            heuristic_off: self.heuristic_off || disables_heuristic(key),
        }
    }
}

#[derive(Default)]
struct Walker {
    segs: Vec<PathSegment>,
    out: Vec<ImageValue>,
}

impl Walker {
    fn walk(&mut self, v: &Value, leaf_key: Option<&str>, ctx: Ctx, depth: usize) {
        if depth > MAX_DEPTH || self.out.len() >= MAX_IMAGE_VALUES {
            return;
        }
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    if k.len() > MAX_KEY_LEN || k.chars().any(char::is_control) {
                        continue;
                    }
                    if matches!(child, Value::Object(_) | Value::Array(_)) && is_secret_subtree(k) {
                        continue;
                    }
                    self.segs.push(PathSegment::Key(k.clone()));
                    self.walk(child, Some(k), ctx.enter(k), depth + 1);
                    self.segs.pop();
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    self.segs.push(PathSegment::Index(i));
                    // List elements inherit the list's key and context.
                    self.walk(child, leaf_key, ctx, depth + 1);
                    self.segs.pop();
                }
            }
            Value::String(s) => self.scalar(s, leaf_key, ctx, true),
            Value::Number(n) => self.scalar(&n.to_string(), leaf_key, ctx, false),
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn scalar(&mut self, s: &str, leaf_key: Option<&str>, ctx: Ctx, is_string: bool) {
        let Some(key) = leaf_key else {
            // A bare scalar as the whole values tree has no path.
            return;
        };
        if is_secretish_leaf(key) {
            return;
        }
        let take = if ctx.in_image_map || ctx.at_image_key {
            is_image_component(s)
        } else {
            is_string && !ctx.heuristic_off && looks_like_image_ref(s)
        };
        if take {
            self.out.push((join_path(&self.segs), s.to_string()));
        }
    }
}

/// Whether `s` may be part of an image reference: a registry, a repository, a tag, a digest or
/// a whole reference. Empty is allowed (charts default `digest: ""`).
fn is_image_component(s: &str) -> bool {
    if s.len() > MAX_VALUE_LEN || s.contains("://") {
        return false;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '@' | '+' | '-'))
    {
        return false;
    }
    match s.split_once('@') {
        None => true,
        // `user:pass@host` must not pass as `repo@digest`.
        Some((_, after)) => !after.contains('@') && digest_algorithm_prefix(after),
    }
}

fn digest_algorithm_prefix(s: &str) -> bool {
    ["sha256:", "sha384:", "sha512:"]
        .iter()
        .any(|p| s.starts_with(p))
}

/// Whether `s` is a valid digest: `sha256:` + 64 hex, `sha384:` + 96, `sha512:` + 128.
fn is_digest(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    let want = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == want && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// Conservative test for a string that is a whole image reference,
/// `[host[:port]/]path[:tag][@digest]`, with a tag or a digest.
///
/// Rejected on purpose: anything with whitespace or `://`, a bare name containing `.`
/// (`db.example.com:5432`), a bare name with an all-digit tag of 4+ digits (`redis:6379`,
/// `localhost:8080`), and a bare name whose tag does not look like a version or a common image
/// tag word (`admin:hunter2`). A name with a `/` or a digest is taken with any valid tag.
pub fn looks_like_image_ref(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_VALUE_LEN || s.contains("://") {
        return false;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '@' | '-'))
    {
        return false;
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            if !is_digest(d) {
                return false;
            }
            (r, Some(d))
        }
        None => (s, None),
    };
    // The tag follows the last ':' after the last '/'.
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(i) if last_slash.is_none_or(|sl| i > sl) => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if tag.is_none() && digest.is_none() {
        return false;
    }
    if let Some(t) = tag
        && !is_tag(t)
    {
        return false;
    }
    if !is_image_name(name) {
        return false;
    }
    if digest.is_none() && !name.contains('/') {
        // Bare `name:tag`: the shape most likely to be something else.
        if name.contains('.') {
            return false;
        }
        let t = tag.unwrap_or_default();
        if t.len() >= 4 && t.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
        if !is_versionish_tag(t) {
            return false;
        }
    }
    true
}

/// Docker tag grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(t: &str) -> bool {
    let mut chars = t.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    t.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `[host[:port]/]component(/component)*` with lowercase path components.
fn is_image_name(name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let parts: Vec<&str> = name.split('/').collect();
    let (host, path) = match parts.split_first() {
        Some((first, rest))
            if !rest.is_empty()
                && (first.contains('.') || first.contains(':') || *first == "localhost") =>
        {
            (Some(*first), rest)
        }
        _ => (None, parts.as_slice()),
    };
    if let Some(h) = host {
        let (hostname, port) = match h.split_once(':') {
            Some((hn, p)) => (hn, Some(p)),
            None => (h, None),
        };
        if hostname.is_empty()
            || !hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        {
            return false;
        }
        if let Some(p) = port
            && (p.is_empty() || p.len() > 5 || !p.chars().all(|c| c.is_ascii_digit()))
        {
            return false;
        }
    }
    // A name needs a letter somewhere in its last component: `12:30` is a time, not an image.
    !path.is_empty()
        && path.iter().all(|c| is_path_component(c))
        && path
            .last()
            .is_some_and(|c| c.chars().any(|ch| ch.is_ascii_lowercase()))
}

fn is_path_component(c: &str) -> bool {
    let ok_chars = c
        .chars()
        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-'));
    let alnum_ends = c
        .chars()
        .next()
        .is_some_and(|ch| ch.is_ascii_alphanumeric())
        && c.chars()
            .last()
            .is_some_and(|ch| ch.is_ascii_alphanumeric());
    ok_chars && alnum_ends
}

/// Tags a bare `name:tag` may carry: versions (`15`, `1.36`, `v2.1`, `3.12-slim`) and the
/// usual words (`latest`, `alpine`, `stable-alpine`, …).
fn is_versionish_tag(t: &str) -> bool {
    let mut chars = t.chars();
    let first = chars.next();
    let second = chars.next();
    if first.is_some_and(|c| c.is_ascii_digit()) {
        return true;
    }
    if first == Some('v') && second.is_some_and(|c| c.is_ascii_digit()) {
        return true;
    }
    const WORDS: [&str; 14] = [
        "latest", "stable", "mainline", "alpine", "slim", "edge", "lts", "bookworm", "bullseye",
        "buster", "jammy", "noble", "focal", "musl",
    ];
    WORDS.iter().any(|w| {
        t == *w
            || t.strip_prefix(w)
                .is_some_and(|r| r.starts_with(['-', '_', '.']))
    })
}

/// Counts the non-null leaves of a values tree (list elements counted one by one, an empty
/// list as one leaf), so the advice can tell whether the stale pins are all a config holds.
pub fn count_leaves(v: &Value) -> u32 {
    fn go(v: &Value, depth: usize) -> u32 {
        if depth > MAX_DEPTH {
            return 1;
        }
        match v {
            Value::Null => 0,
            Value::Object(m) => m
                .values()
                .fold(0u32, |acc, c| acc.saturating_add(go(c, depth + 1))),
            Value::Array(a) if a.is_empty() => 1,
            Value::Array(a) => a
                .iter()
                .fold(0u32, |acc, c| acc.saturating_add(go(c, depth + 1))),
            _ => 1,
        }
    }
    go(v, 0)
}

// ------------------------------------------------------------------------------------------
// Revision summaries and the --reuse-values fingerprint
// ------------------------------------------------------------------------------------------

/// What the release store keeps per revision for the stale-pin analysis: chart identity,
/// status, the image-valued paths of `config` and of `chart.values`, and two small facts
/// computed at decode time. Never whole values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionValues {
    pub revision: u32,
    pub chart_name: String,
    pub chart_version: String,
    /// Helm status string: `deployed`, `superseded`, `failed`, `pending-upgrade`, …
    pub status: String,
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
    /// [`reuse_values_fingerprint`] (false for a first revision).
    pub fn summarize(
        revision: u32,
        chart_name: &str,
        chart_version: &str,
        status: &str,
        config: &Value,
        chart_values: &Value,
        reused_values: bool,
    ) -> Self {
        RevisionValues {
            revision,
            chart_name: chart_name.to_string(),
            chart_version: chart_version.to_string(),
            status: status.to_string(),
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

/// Whether revision N+1 was written by `helm upgrade --reuse-values`, from the full decoded
/// values of the revision Helm upgraded from (N) and of the new one: `chart.values(N+1)`
/// contains every non-null leaf of `CoalesceValues(chart.values(N), config(N))`.
pub fn reuse_values_fingerprint(
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

// ------------------------------------------------------------------------------------------
// Stale pins
// ------------------------------------------------------------------------------------------

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
    if new.status == "pending-install" {
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
        .position(|r| r.status == "deployed")
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
                .filter(|r| r.status != "failed" && !r.status.starts_with("pending")),
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

impl StalePin {
    /// The explanation for `helm upgrade`'s stderr: what is pinned since when, and the command
    /// that makes the release follow the chart. Each line is at most [`MAX_WARNING_LEN`] bytes
    /// and, unless a value is very long, at most [`SOFT_WARNING_LEN`].
    pub fn warning_lines(&self, release: &str, chart_ref_hint: &str) -> Vec<String> {
        vec![self.summary_line(), self.fix_line(release, chart_ref_hint)]
    }

    fn summary_line(&self) -> String {
        let full = self.summary_with(|s| s.to_string());
        if full.len() <= SOFT_WARNING_LEN {
            return full;
        }
        // Shorten long values (digests) in this line only; the fix line stays exact.
        fit(self.summary_with(|s| abbreviate(s, 24)))
    }

    fn summary_with(&self, show: impl Fn(&str) -> String) -> String {
        let head = format!(
            "{}={} pinned since revision {}",
            clean(&self.path),
            show(&self.pinned),
            self.since_revision
        );
        let version = clean(&self.chart_version);
        let tail = if self.reuse_values {
            format!("--reuse-values discarded chart {version} defaults")
        } else {
            match self.chart_default.as_deref() {
                Some("") => format!("chart {version} default is empty"),
                Some(d) => format!("chart {version} default is {}", show(d)),
                None => format!("chart {version} has no default there"),
            }
        };
        format!("{head}; {tail}")
    }

    fn fix_line(&self, release: &str, chart_ref_hint: &str) -> String {
        let base = format!(
            "to follow the chart: helm upgrade {} {}",
            shell_word(&clean(release)),
            clean(chart_ref_hint)
        );
        let line = match self.advice {
            Advice::ResetValues => format!("{base} --reset-values"),
            Advice::ResetThenReuseValues => {
                let value = match self.chart_default.as_deref() {
                    Some(d) if !d.is_empty() && !self.reuse_values => d,
                    _ => "null",
                };
                let arg = format!("{}={}", self.path, escape_set_value(value));
                format!(
                    "{base} --reset-then-reuse-values --set {}",
                    shell_word(&arg)
                )
            }
        };
        fit(line)
    }
}

impl fmt::Display for StalePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary_line())
    }
}

/// The command that drops a persisted value at `path` and keeps the other persisted values:
/// Helm deletes a user key set to `null`, so the chart's default applies again.
pub fn drop_command(release: &str, path: &str) -> String {
    format!(
        "helm upgrade {} <chart> --reset-then-reuse-values --set {}",
        shell_word(&clean(release)),
        shell_word(&format!("{}=null", clean(path)))
    )
}

/// `--set` splits values on `,` and treats `\` as an escape.
fn escape_set_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Single-quotes a word for POSIX shells when it holds anything beyond a safe set.
fn shell_word(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@' | '=' | '+')
        });
    if safe || s.starts_with('<') && s.ends_with('>') {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Drops control characters from caller-supplied text before it goes into a warning.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// Keeps the first `max` characters of a long value, marking the cut.
fn abbreviate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Cuts a line to at most [`MAX_WARNING_LEN`] bytes on a character boundary.
fn fit(line: String) -> String {
    if line.len() <= MAX_WARNING_LEN {
        return line;
    }
    let mut cut = MAX_WARNING_LEN - 3;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &line[..cut])
}

#[cfg(test)]
mod tests;
