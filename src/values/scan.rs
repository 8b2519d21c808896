//! The one gate between a values tree and anything that leaves the process: which scalars
//! decide an image (see the module documentation of [`super`] for what is collected and why).

use serde_json::Value;

use super::path::{PathSegment, join_path};
use super::{ImageValue, MAX_DEPTH, MAX_IMAGE_VALUES, MAX_KEY_LEN};
use crate::image::{is_image_component, looks_like_image_ref};

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
    key.eq_ignore_ascii_case("image")
        || key.eq_ignore_ascii_case("images")
        || key.ends_with("Image")
        || key.ends_with("Images")
        || ["_image", "-image", "_images", "-images"]
            .iter()
            .any(|s| ends_with_ci(key, s))
}

/// `key` ends with `suffix` (lowercase ASCII), ignoring ASCII case: what lowercasing the key
/// first would say, without the allocation (this runs for every key of every values tree).
fn ends_with_ci(key: &str, suffix: &str) -> bool {
    key.len() >= suffix.len()
        && key.as_bytes()[key.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Whether `key` contains any of `words` (lowercase ASCII), ignoring ASCII case.
fn contains_any_ci(key: &str, words: &[&str]) -> bool {
    let k = key.as_bytes();
    words.iter().any(|w| {
        let w = w.as_bytes();
        k.len() >= w.len() && k.windows(w.len()).any(|win| win.eq_ignore_ascii_case(w))
    })
}

/// A scalar under such a key is never taken, even inside an image map
/// (`image.pullSecrets`, `image.password`, `imageCredentials.username`, …).
fn is_secretish_leaf(key: &str) -> bool {
    contains_any_ci(
        key,
        &[
            "pass", "secret", "token", "cred", "auth", "key", "cert", "private", "salt", "cookie",
            "session", "sign", "user", "login", "dsn", "conn",
        ],
    )
}

/// Subtrees under such keys are not entered at all.
fn is_secret_subtree(key: &str) -> bool {
    contains_any_ci(
        key,
        &["password", "passwd", "secret", "token", "credential"],
    )
}

/// Below such keys the free-form image-reference heuristic is off (`auth.users[0]: "u:1x"`).
fn disables_heuristic(key: &str) -> bool {
    contains_any_ci(
        key,
        &[
            "pass", "secret", "token", "cred", "auth", "user", "login", "key", "env",
        ],
    )
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

/// One step of the path being walked, borrowed from the tree: the owned path is only built
/// for a value that is taken.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

#[derive(Default)]
struct Walker<'a> {
    segs: Vec<Seg<'a>>,
    out: Vec<ImageValue>,
}

impl<'a> Walker<'a> {
    fn walk(&mut self, v: &'a Value, leaf_key: Option<&'a str>, ctx: Ctx, depth: usize) {
        if depth > MAX_DEPTH || self.out.len() >= MAX_IMAGE_VALUES {
            return;
        }
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    if k.len() > MAX_KEY_LEN || k.chars().any(char::is_control) {
                        continue;
                    }
                    self.segs.push(Seg::Key(k));
                    match child {
                        Value::Object(_) | Value::Array(_) if is_secret_subtree(k) => {}
                        Value::Object(_) | Value::Array(_) => {
                            self.walk(child, Some(k), ctx.enter(k), depth + 1);
                        }
                        _ if depth < MAX_DEPTH => self.leaf(child, k, ctx),
                        _ => {}
                    }
                    self.segs.pop();
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    self.segs.push(Seg::Index(i));
                    // List elements inherit the list's key and context.
                    self.walk(child, leaf_key, ctx, depth + 1);
                    self.segs.pop();
                }
            }
            Value::String(s) => self.scalar(s, leaf_key, ctx, true),
            Value::Number(n) => {
                if ctx.in_image_map || ctx.at_image_key {
                    self.scalar(&n.to_string(), leaf_key, ctx, false);
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }

    /// A scalar `v` directly under `key` of a map walked in `parent` context.
    fn leaf(&mut self, v: &Value, key: &str, parent: Ctx) {
        if self.out.len() >= MAX_IMAGE_VALUES {
            return;
        }
        let image_context = parent.in_image_map || is_image_key(key);
        let value = match v {
            Value::String(s) if image_context => is_image_component(s).then(|| s.clone()),
            Value::String(s) => {
                (!parent.heuristic_off && looks_like_image_ref(s) && !disables_heuristic(key))
                    .then(|| s.clone())
            }
            Value::Number(n) if image_context => {
                Some(n.to_string()).filter(|n| is_image_component(n))
            }
            _ => None,
        };
        if let Some(value) = value
            && !is_secretish_leaf(key)
        {
            self.push(value);
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
            self.push(s.to_string());
        }
    }

    fn push(&mut self, value: String) {
        let segs: Vec<PathSegment> = self
            .segs
            .iter()
            .map(|s| match s {
                Seg::Key(k) => PathSegment::Key((*k).to_owned()),
                Seg::Index(i) => PathSegment::Index(*i),
            })
            .collect();
        self.out.push((join_path(&segs), value));
    }
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
