//! Does a string from a values tree look like (a piece of) an image reference? A deliberately
//! conservative test, stricter than the reference grammar, because a values tree also holds
//! `host:port` pairs, URLs and `user:password` strings that must never be taken for images:
//! the values scan uses it to decide what it may keep and print.

/// Longest value taken as image-valued.
pub const MAX_VALUE_LEN: usize = 512;

/// Whether `s` may be part of an image reference: a registry, a repository, a tag, a digest or
/// a whole reference. Empty is allowed (charts default `digest: ""`).
pub fn is_image_component(s: &str) -> bool {
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
