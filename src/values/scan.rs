//! The one gate between a values tree and anything that leaves the process: which scalars
//! decide an image (see the module documentation of [`super`] for what is collected and why).

use serde_json::Value;

use super::path::{PathSegment, join_path};
use super::{ImageValue, MAX_DEPTH, MAX_IMAGE_VALUES, MAX_KEY_LEN, MAX_VALUE_LEN};

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
