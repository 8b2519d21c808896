//! Container image references, compared the way a container runtime resolves them.
//!
//! A chart may render `postgres:15` while `kubectl set image` writes
//! `docker.io/library/postgres:15`: the same image. This module owns parsing and normalising
//! references: the grammar of distribution/reference (what Docker and containerd accept), with
//! Docker Hub's implicit `docker.io` registry, `library/` namespace and `latest` tag, and
//! `index.docker.io` read as `docker.io`. On top of it one rule of our own: when a reference
//! carries a digest, the digest decides — the runtime pulls by digest and ignores the tag, so
//! `name:tag@sha256:…` equals `name@sha256:…`.
//!
//! The parser is hand-written rather than a regex: the regex-based parser it replaces kept a
//! lazy-DFA cache of ~2.5 MB per thread once references reached ~50 characters (an ECR
//! reference is ~60), one per blocking-pool thread, and that memory never came back. Here a
//! parse borrows from its input, allocates nothing and keeps no state; an [`Image`] holds one
//! string (the written form, then the canonical form when that differs).
//!
//! A string that is not a valid reference is kept verbatim and only equals itself: a broken
//! image in a manifest must not make two different strings compare equal.

mod looks;
pub use looks::{MAX_VALUE_LEN, is_image_component, looks_like_image_ref};

use std::fmt;
use std::sync::Arc;

/// Longest repository name (registry and path, after normalisation), as the runtimes check it.
const NAME_MAX: usize = 255;
/// Longest tag: `[\w][\w.-]{0,127}`.
const TAG_MAX: usize = 128;
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const OFFICIAL: &str = "library/";
const DEFAULT_TAG: &str = "latest";

/// Why a string is not an image reference (kept for tests and diagnostics; callers compare
/// such strings verbatim).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum Invalid {
    #[error("empty reference")]
    Empty,
    #[error("a 64-character hex identifier, not a repository name")]
    Identifier,
    #[error("digest is not sha256/sha384/sha512 with lowercase hex of its length")]
    Digest,
    #[error("tag is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")]
    Tag,
    #[error("registry is not a host name, IPv4 or [IPv6] address with an optional port")]
    Domain,
    #[error("repository path is not lowercase components joined by '/'")]
    Path,
    #[error("repository name is longer than {NAME_MAX} characters")]
    TooLong,
}

/// A parsed reference, borrowing from the string it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reference<'a> {
    /// The registry, `docker.io` for Docker Hub (implicit, or written `index.docker.io`).
    domain: &'a str,
    /// Whether Docker Hub's `library/` namespace is implied before `path`.
    library: bool,
    path: &'a str,
    /// The tag as written.
    tag: Option<&'a str>,
    /// `algorithm:hex`.
    digest: Option<&'a str>,
}

impl<'a> Reference<'a> {
    /// The tag a runtime pulls when the reference has no digest: the written one or `latest`.
    fn tag_or_latest(&self) -> &'a str {
        self.tag.unwrap_or(DEFAULT_TAG)
    }

    /// The pieces of `registry/repository` followed by `@digest` or `:tag`, to be joined.
    fn canonical_pieces(&self) -> [&'a str; 6] {
        let library = if self.library { OFFICIAL } else { "" };
        let (sep, suffix) = match self.digest {
            Some(d) => ("@", d),
            None => (":", self.tag_or_latest()),
        };
        [self.domain, "/", library, self.path, sep, suffix]
    }

    /// Length of `registry/repository`.
    fn name_len(&self) -> usize {
        self.domain.len() + 1 + if self.library { OFFICIAL.len() } else { 0 } + self.path.len()
    }

    /// The repository path with `library/` when implied, without building it.
    fn path_bytes(&self) -> impl Iterator<Item = u8> + 'a {
        let library = if self.library { OFFICIAL } else { "" };
        library.bytes().chain(self.path.bytes())
    }

    /// Whether both name the same repository (`library/` implied or written alike).
    fn same_repository(&self, other: &Reference<'_>) -> bool {
        self.domain == other.domain && self.path_bytes().eq(other.path_bytes())
    }

    /// Whether both resolve to the same image (see [`Image::same_as`]).
    fn same_as(&self, other: &Reference<'_>) -> bool {
        if !self.same_repository(other) {
            return false;
        }
        match (self.digest, other.digest) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.tag_or_latest() == other.tag_or_latest(),
            // A digest added to a tag (by a digest-resolving mutator) is still that tag.
            (Some(_), None) => self.tag == Some(other.tag_or_latest()),
            (None, Some(_)) => other.tag == Some(self.tag_or_latest()),
        }
    }
}

/// Parses `s` (already trimmed) the way Docker's `ParseNormalizedNamed` does.
fn parse(s: &str) -> Result<Reference<'_>, Invalid> {
    if s.is_empty() {
        return Err(Invalid::Empty);
    }
    // A bare 64-hex string is an image ID to Docker, never a repository name.
    if s.len() == 64 && s.bytes().all(is_lower_hex) {
        return Err(Invalid::Identifier);
    }
    // Neither names nor tags contain '@': the first one starts the digest.
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => {
            check_digest(digest)?;
            (rest, Some(digest))
        }
        None => (s, None),
    };
    // A ':' followed by a '/' is a registry port, not a tag.
    let (name, tag) = match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => {
            check_tag(tag)?;
            (name, Some(tag))
        }
        _ => (rest, None),
    };
    let (domain, path) = split_domain(name)?;
    if path.is_empty() || !path.split('/').all(path_component) {
        return Err(Invalid::Path);
    }
    let r = Reference {
        domain,
        library: domain == DOCKER_HUB && !path.contains('/'),
        path,
        tag,
        digest,
    };
    if r.name_len() > NAME_MAX {
        return Err(Invalid::TooLong);
    }
    Ok(r)
}

/// Docker's rule for whether the first component is a registry: it is `localhost`, or has a
/// '.' or ':' (a host name, IP address or port), or upper case (which paths cannot have).
/// Anything else is a Docker Hub namespace. A component taken as a registry must be a valid
/// one (Docker would parse `foo_bar.com/x` as a registry-less name that no runtime can pull;
/// here it is simply not a reference).
fn split_domain(name: &str) -> Result<(&str, &str), Invalid> {
    let Some((first, rest)) = name.split_once('/') else {
        return Ok((DOCKER_HUB, name));
    };
    if first == DOCKER_HUB_LEGACY {
        return Ok((DOCKER_HUB, rest));
    }
    if first == "localhost"
        || first.contains(['.', ':'])
        || first.bytes().any(|b| b.is_ascii_uppercase())
    {
        check_domain(first)?;
        return Ok((first, rest));
    }
    Ok((DOCKER_HUB, name))
}

/// `host[:port]` where host is DNS labels (letters, digits, inner '-') joined by '.', or an
/// IPv6 address in brackets (hex digits and ':', no zone).
fn check_domain(d: &str) -> Result<(), Invalid> {
    let (host_ok, port) = match d.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, port)) => (
                !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
                port,
            ),
            None => (false, ""),
        },
        None => {
            let (host, port) = d.split_at(d.find(':').unwrap_or(d.len()));
            (host.split('.').all(domain_label), port)
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(Invalid::Domain)
    }
}

/// `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn domain_label(label: &str) -> bool {
    let b = label.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        }
        _ => false,
    }
}

/// `[a-z0-9]+` runs joined by one separator each: `.`, `_`, `__` or any number of `-`.
fn path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let lower_alnum = |i: usize| {
        b.get(i)
            .is_some_and(|x| x.is_ascii_lowercase() || x.is_ascii_digit())
    };
    let separator = |i: usize| b.get(i).is_some_and(|x| matches!(x, b'.' | b'_' | b'-'));
    let mut i = 0;
    loop {
        let run = i;
        while lower_alnum(i) {
            i += 1;
        }
        if i == run {
            return false; // empty component, leading separator, or a separator at the end
        }
        if i == b.len() {
            return true;
        }
        let sep = i;
        while separator(i) {
            i += 1;
        }
        let ok = match b.get(sep..i) {
            Some(b".") | Some(b"_") | Some(b"__") => true,
            Some(dashes) => !dashes.is_empty() && dashes.iter().all(|x| *x == b'-'),
            None => false,
        };
        if !ok {
            return false; // a character outside the grammar, or a mixed separator
        }
    }
}

/// `[\w][\w.-]{0,127}` with ASCII `\w`.
fn check_tag(tag: &str) -> Result<(), Invalid> {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    let mut bytes = tag.bytes();
    let ok = tag.len() <= TAG_MAX
        && bytes.next().is_some_and(|b| word(&b))
        && bytes.all(|b| word(&b) || b == b'.' || b == b'-');
    if ok { Ok(()) } else { Err(Invalid::Tag) }
}

/// The algorithms a runtime verifies, each with lowercase hex of its exact length (as
/// go-digest validates them; other algorithms are unsupported there too).
fn check_digest(digest: &str) -> Result<(), Invalid> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(Invalid::Digest);
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(Invalid::Digest),
    };
    if hex.len() == len && hex.bytes().all(is_lower_hex) {
        Ok(())
    } else {
        Err(Invalid::Digest)
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// An image reference as written, with its canonical form for comparison.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Image {
    /// The reference as written (trimmed), then its canonical form unless that is the same
    /// text: one allocation per image, shared by its clones (the request path hands out
    /// clones of cached and already-parsed images: a refcount each, not a copy).
    buf: Arc<str>,
    /// Where the canonical form starts in `buf`; 0 when it is the written form (all of `buf`).
    canonical: u16,
    /// Length of `registry/repository` at the start of the canonical form.
    name: u16,
    /// The tag in `buf` (start, end): the written one, or the canonical `latest` of an
    /// undigested reference; empty when there is none (digest only, or not a reference).
    tag: (u16, u16),
    /// Whether the canonical form is `registry/repository@digest`.
    digest: bool,
}

impl Image {
    /// Parses and normalises `raw`. Never fails: an unparsable reference compares verbatim.
    pub fn new(raw: &str) -> Self {
        let raw = raw.trim();
        parse(raw)
            .ok()
            .and_then(|r| Self::normalised(raw, &r))
            .unwrap_or_else(|| Self {
                buf: raw.into(),
                canonical: 0,
                name: 0,
                tag: (0, 0),
                digest: false,
            })
    }

    /// `raw` and its canonical form in one exactly-sized string. `None` only if an offset
    /// does not fit (impossible for a valid reference: names ≤ 255, tags ≤ 128, digests ≤ 135).
    fn normalised(raw: &str, r: &Reference<'_>) -> Option<Self> {
        let pieces = r.canonical_pieces();
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        let already = len == raw.len() && {
            let mut rest = raw;
            pieces.iter().all(|p| match rest.strip_prefix(p) {
                Some(r) => {
                    rest = r;
                    true
                }
                None => false,
            })
        };
        let start = if already { 0 } else { raw.len() };
        let mut buf = String::with_capacity(start + len);
        buf.push_str(raw);
        if !already {
            pieces.iter().for_each(|p| buf.push_str(p));
        }
        let name = r.name_len();
        let tag = match (r.digest, r.tag) {
            (None, _) => (start + name + 1, buf.len()),
            // Written `…:tag@digest`: the tag ends where the digest's '@' is.
            (Some(d), Some(t)) => {
                let end = raw.len() - d.len() - 1;
                (end - t.len(), end)
            }
            (Some(_), None) => (0, 0),
        };
        let u = |n: usize| u16::try_from(n).ok();
        Some(Self {
            buf: buf.into(),
            canonical: u(start)?,
            name: u(name)?,
            tag: (u(tag.0)?, u(tag.1)?),
            digest: r.digest.is_some(),
        })
    }

    /// The reference as the chart or the client wrote it (what users recognise in messages).
    pub fn as_str(&self) -> &str {
        if self.canonical == 0 {
            &self.buf
        } else {
            self.buf
                .get(..usize::from(self.canonical))
                .unwrap_or_default()
        }
    }

    /// `registry/repository:tag` or `registry/repository@digest`.
    pub fn canonical(&self) -> &str {
        self.buf
            .get(usize::from(self.canonical)..)
            .unwrap_or_default()
    }

    /// `registry/repository` with the tag, when there is one (the written tag, or the implied
    /// `latest` of an undigested reference).
    fn tagged(&self) -> Option<(&str, &str)> {
        let (start, end) = (usize::from(self.tag.0), usize::from(self.tag.1));
        if start == end {
            return None;
        }
        let name = self.canonical().get(..usize::from(self.name))?;
        Some((name, self.buf.get(start..end)?))
    }

    /// Whether two references resolve to the same image. A digest decides between two
    /// digests; when only one side pins a digest (a digest-resolving mutator such as
    /// Kyverno's `mutateDigest` added it), equal tags are the same image.
    pub fn same_as(&self, other: &Image) -> bool {
        if self.canonical() == other.canonical() {
            return true;
        }
        self.digest != other.digest && self.tagged().is_some() && self.tagged() == other.tagged()
    }
}

/// Slots of the per-thread cache of [`Image::recent`].
const RECENT_SLOTS: usize = 128;
/// Longer references are parsed every time, not kept (a bound on the cache's memory).
const RECENT_MAX_LEN: usize = 256;

thread_local! {
    /// Recently parsed references, direct-mapped by a hash of the written form: a slot holds
    /// the last one that fell on it. ~128 × (32 B + the reference) per thread.
    static RECENT: std::cell::RefCell<Vec<Option<Image>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Image {
    /// [`Image::new`] through a small per-thread cache, for the request path: the API server
    /// sends the same few hundred references over and over (every update of a workload
    /// repeats all its containers, every Pod of a ReplicaSet the same ones), and a hit (a
    /// hash and a copy) costs a fifth of a parse (`perf`: parsing was ~1.5 µs of a 4 KiB
    /// review's five-container edit). A hit is the same written string, compared in full, so
    /// it is exactly what [`Image::new`] would return.
    pub fn recent(raw: &str) -> Self {
        let raw = raw.trim();
        if raw.len() > RECENT_MAX_LEN {
            return Self::new(raw);
        }
        let slot = slot_hash(raw.as_bytes()) as usize % RECENT_SLOTS;
        RECENT
            .try_with(|cache| {
                let Ok(mut cache) = cache.try_borrow_mut() else {
                    return Self::new(raw);
                };
                if cache.is_empty() {
                    cache.resize(RECENT_SLOTS, None);
                }
                match cache.get_mut(slot) {
                    Some(Some(hit)) if hit.as_str() == raw => hit.clone(),
                    Some(entry) => {
                        let image = Self::new(raw);
                        *entry = Some(image.clone());
                        image
                    }
                    None => Self::new(raw),
                }
            })
            .unwrap_or_else(|_| Self::new(raw))
    }
}

/// A word-at-a-time hash (FxHash's step over 8-byte chunks, then murmur3's finaliser):
/// ~8× fewer dependent multiplies than hashing byte by byte (FNV-1a was a third of the
/// cache's cost). The finaliser matters: a product's low bits see only the low bits of what
/// was multiplied, so without it references differing in their last bytes (`:v1.4.20`,
/// `:v1.4.21`) shared a slot. A hit is confirmed by comparing the whole string.
fn slot_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    let mut h = step(0, bytes.len() as u64);
    for c in chunks.by_ref() {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = step(h, u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = step(h, u64::from_le_bytes(w));
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("raw", &self.as_str())
            .field("canonical", &self.canonical())
            .finish()
    }
}

impl fmt::Display for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference as briefly as it identifies the image: Docker Hub's implicit prefixes dropped.
pub fn brief(raw: &str) -> &str {
    raw.strip_prefix("docker.io/library/")
        .or_else(|| raw.strip_prefix("docker.io/"))
        .unwrap_or(raw)
}

/// How `other` differs from `base`, as briefly as it can be said: only the tag (`:15`) or
/// digest (`@sha256:…`) when both name the same repository, else the short reference.
pub fn delta(base: &str, other: &str) -> String {
    match (parse(base), parse(other)) {
        (Ok(b), Ok(o)) if b.same_repository(&o) => match o.digest {
            Some(d) => format!("@{d}"),
            None => format!(":{}", o.tag_or_latest()),
        },
        _ => brief(other).to_owned(),
    }
}

/// Whether two reference strings resolve to the same image.
pub fn same(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (a, b) = (a.trim(), b.trim());
    match (parse(a), parse(b)) {
        (Ok(x), Ok(y)) => x.same_as(&y),
        // A broken reference equals only itself; a valid one never equals a broken one.
        (Err(_), Err(_)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn equivalences() {
        let cases: &[(&str, &str, bool)] = &[
            ("nginx:1.27", "docker.io/library/nginx:1.27", true),
            ("nginx", "nginx:latest", true),
            ("nginx", "docker.io/library/nginx:latest", true),
            ("index.docker.io/library/nginx:1", "nginx:1", true),
            (
                "bitnami/postgresql:15",
                "docker.io/bitnami/postgresql:15",
                true,
            ),
            ("bitnami/postgresql:15", "bitnami/postgresql:11", false),
            (
                "registry.local:5000/app:1",
                "registry.local:5000/app:1",
                true,
            ),
            ("registry.local:5000/app:1", "registry.local/app:1", false),
            ("localhost:5000/app", "localhost:5000/app:latest", true),
            ("quay.io/org/app:1", "docker.io/org/app:1", false),
            ("ghcr.io/org/app:v1", "ghcr.io/org/app:v2", false),
            ("not a ref", "not a ref", true),
            ("not a ref", "not-a-ref", false),
            ("", "", true),
        ];
        for (a, b, want) in cases {
            assert_eq!(same(a, b), *want, "{a} vs {b}");
            assert_eq!(Image::new(a).same_as(&Image::new(b)), *want, "{a} vs {b}");
        }
    }

    #[test]
    fn digest_decides() {
        let with_tag = format!("postgres:15@{D}");
        let bare = format!("docker.io/library/postgres@{D}");
        assert!(same(&with_tag, &bare));
        // The tag is ignored when both sides pin a digest, even a different tag.
        assert!(same(&format!("postgres:11@{D}"), &bare));
        // A digest added to the chart's tag (a digest-resolving mutator) is still that tag.
        assert!(same(&with_tag, "postgres:15"));
        assert!(!same(&with_tag, "postgres:11"));
        // A digest does not equal a tag: nothing says they resolve to the same bytes.
        assert!(!same(&bare, "postgres:15"));
    }

    #[test]
    fn short_forms_for_messages() {
        assert_eq!(brief("docker.io/library/nginx:1"), "nginx:1");
        assert_eq!(brief("docker.io/bitnami/pg:1"), "bitnami/pg:1");
        assert_eq!(brief("quay.io/x/y:1"), "quay.io/x/y:1");
        assert_eq!(delta("nginx:1.26", "docker.io/library/nginx:1.27"), ":1.27");
        assert_eq!(
            delta("nginx:1.26", format!("nginx@{D}").as_str()),
            format!("@{D}")
        );
        assert_eq!(
            delta("nginx:1.26", "quay.io/nginx:1.26"),
            "quay.io/nginx:1.26"
        );
    }

    /// 64 `f`s, 34 `f`s and 128 `f`s: digest payloads of the upstream tables.
    fn f(n: usize) -> String {
        "f".repeat(n)
    }

    /// Valid references and their canonical forms: the tables of distribution/reference
    /// (`reference_test.go`, `normalize_test.go`), normalised as `ParseNormalizedNamed` does,
    /// plus the forms charts use.
    fn valid() -> Vec<(String, String)> {
        let sha = format!("sha256:{}", f(64));
        let sha512 = format!("sha512:{}", f(128));
        let hex = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";
        let long_name = format!("{}a", "a/".repeat(122)); // 245 + "docker.io/" = 255
        vec![
            ("test_com".into(), "docker.io/library/test_com:latest".into()),
            ("test.com:tag".into(), "docker.io/library/test.com:tag".into()),
            ("test.com:5000".into(), "docker.io/library/test.com:5000".into()),
            ("test.com/repo:tag".into(), "test.com/repo:tag".into()),
            ("test:5000/repo".into(), "test:5000/repo:latest".into()),
            ("test:5000/repo:tag".into(), "test:5000/repo:tag".into()),
            (format!("test:5000/repo@{sha}"), format!("test:5000/repo@{sha}")),
            (format!("test:5000/repo:tag@{sha}"), format!("test:5000/repo@{sha}")),
            ("lowercase:Uppercase".into(), "docker.io/library/lowercase:Uppercase".into()),
            ("sub-dom1.foo.com/bar/baz/quux".into(), "sub-dom1.foo.com/bar/baz/quux:latest".into()),
            ("sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(), "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into()),
            ("b.gcr.io/test.example.com/my-app:test.example.com".into(), "b.gcr.io/test.example.com/my-app:test.example.com".into()),
            ("xn--n3h.com/myimage:xn--n3h.com".into(), "xn--n3h.com/myimage:xn--n3h.com".into()),
            (format!("xn--7o8h.com/myimage:xn--7o8h.com@{sha512}"), format!("xn--7o8h.com/myimage@{sha512}")),
            ("foo_bar.com:8080".into(), "docker.io/library/foo_bar.com:8080".into()),
            ("foo/foo_bar.com:8080".into(), "docker.io/foo/foo_bar.com:8080".into()),
            ("192.168.1.1".into(), "docker.io/library/192.168.1.1:latest".into()),
            ("192.168.1.1:tag".into(), "docker.io/library/192.168.1.1:tag".into()),
            ("192.168.1.1:5000".into(), "docker.io/library/192.168.1.1:5000".into()),
            ("192.168.1.1/repo".into(), "192.168.1.1/repo:latest".into()),
            ("192.168.1.1:5000/repo".into(), "192.168.1.1:5000/repo:latest".into()),
            ("192.168.1.1:5000/repo:5050".into(), "192.168.1.1:5000/repo:5050".into()),
            ("[2001:db8::1]/repo".into(), "[2001:db8::1]/repo:latest".into()),
            ("[2001:db8:1:2:3:4:5:6]/repo:tag".into(), "[2001:db8:1:2:3:4:5:6]/repo:tag".into()),
            ("[2001:db8::1]:5000/repo".into(), "[2001:db8::1]:5000/repo:latest".into()),
            ("[2001:db8::1]:5000/repo:tag".into(), "[2001:db8::1]:5000/repo:tag".into()),
            (format!("[2001:db8::1]:5000/repo:tag@{sha}"), format!("[2001:db8::1]:5000/repo@{sha}")),
            ("[2001:db8::]:5000/repo".into(), "[2001:db8::]:5000/repo:latest".into()),
            ("[::1]:5000/repo".into(), "[::1]:5000/repo:latest".into()),
            ("[fc00:1:2:3:4:5:6:7]:5000/library/debian".into(), "[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest".into()),
            // normalize_test.go: valid repository names.
            ("docker/docker".into(), "docker.io/docker/docker:latest".into()),
            ("library/debian".into(), "docker.io/library/debian:latest".into()),
            ("debian".into(), "docker.io/library/debian:latest".into()),
            ("docker.io/docker/docker".into(), "docker.io/docker/docker:latest".into()),
            ("docker.io/library/debian".into(), "docker.io/library/debian:latest".into()),
            ("docker.io/debian".into(), "docker.io/library/debian:latest".into()),
            ("index.docker.io/docker/docker".into(), "docker.io/docker/docker:latest".into()),
            ("index.docker.io/library/debian".into(), "docker.io/library/debian:latest".into()),
            ("index.docker.io/debian".into(), "docker.io/library/debian:latest".into()),
            ("127.0.0.1:5000/docker/docker".into(), "127.0.0.1:5000/docker/docker:latest".into()),
            ("127.0.0.1:5000/library/debian".into(), "127.0.0.1:5000/library/debian:latest".into()),
            ("127.0.0.1:5000/debian".into(), "127.0.0.1:5000/debian:latest".into()),
            ("192.168.0.1:80".into(), "docker.io/library/192.168.0.1:80".into()),
            ("192.168.0.1:8/debian".into(), "192.168.0.1:8/debian:latest".into()),
            ("thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev".into(), "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest".into()),
            ("[fc00::1]:5000/docker/docker".into(), "[fc00::1]:5000/docker/docker:latest".into()),
            (format!("docker.io/{hex}"), format!("docker.io/library/{hex}:latest")),
            ("Docker/docker".into(), "Docker/docker:latest".into()),
            ("DOCKER/docker".into(), "DOCKER/docker:latest".into()),
            ("docker-rules/docker".into(), "docker.io/docker-rules/docker:latest".into()),
            ("docker---rules/docker".into(), "docker.io/docker---rules/docker:latest".into()),
            ("doc/docker".into(), "docker.io/doc/docker:latest".into()),
            ("d/docker".into(), "docker.io/d/docker:latest".into()),
            ("jess/t".into(), "docker.io/jess/t:latest".into()),
            ("dock__er/docker".into(), "docker.io/dock__er/docker:latest".into()),
            ("library/foo/bar".into(), "docker.io/library/foo/bar:latest".into()),
            ("store/foo/bar".into(), "docker.io/store/foo/bar:latest".into()),
            ("localhost/foo".into(), "localhost/foo:latest".into()),
            ("localhost".into(), "docker.io/library/localhost:latest".into()),
            ("localhost:5000".into(), "docker.io/library/localhost:5000".into()),
            ("dbcc1".into(), "docker.io/library/dbcc1:latest".into()),
            (format!("busybox:latest@{sha}"), format!("docker.io/library/busybox@{sha}")),
            // Names at the length limit (after normalisation), tags at theirs.
            (format!("{long_name}:tag"), format!("docker.io/{long_name}:tag")),
            (format!("nginx:{}", "t".repeat(128)), format!("docker.io/library/nginx:{}", "t".repeat(128))),
            // Forms charts render.
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/platform/api:v1.42.0".into(), "123456789012.dkr.ecr.eu-west-1.amazonaws.com/platform/api:v1.42.0".into()),
            ("registry.k8s.io/ingress-nginx/controller:v1.11.2".into(), "registry.k8s.io/ingress-nginx/controller:v1.11.2".into()),
            ("bitnami/postgresql:15.4.0-debian-12-r0".into(), "docker.io/bitnami/postgresql:15.4.0-debian-12-r0".into()),
            ("quay.io/a.b/c_d/e__f/g-h--i:V_1.0".into(), "quay.io/a.b/c_d/e__f/g-h--i:V_1.0".into()),
            ("Registry.Example.COM/app".into(), "Registry.Example.COM/app:latest".into()),
        ]
    }

    #[test]
    fn parses_the_upstream_valid_table() {
        for (input, canonical) in valid() {
            let img = Image::new(&input);
            assert_eq!(img.as_str(), input, "{input}");
            assert_eq!(img.canonical(), canonical, "{input}");
            // The canonical form is itself a reference, and canonical.
            assert_eq!(Image::new(&canonical).canonical(), canonical, "{input}");
            assert!(same(&input, &canonical), "{input}");
        }
    }

    /// Sibling versions (what an edit's old and new images are) spread over the slots, at
    /// every length: the last byte of a reference changes its slot.
    #[test]
    fn references_differing_in_their_last_bytes_spread() {
        for prefix in [
            "ghcr.io/acme/api:v1.4.",
            "r/app:1.",
            "quay.io/org/a-long-name:v1.2.",
            "x:",
        ] {
            let slots: std::collections::HashSet<usize> = (0..100)
                .map(|i| slot_hash(format!("{prefix}{i:02}").as_bytes()) as usize % RECENT_SLOTS)
                .collect();
            assert!(
                slots.len() >= 50,
                "{prefix}: {} slots of 100 references",
                slots.len()
            );
        }
    }

    #[test]
    fn a_cached_parse_is_the_parse() {
        let mut inputs: Vec<String> = valid().into_iter().map(|(input, _)| input).collect();
        inputs.extend(
            [
                "",
                "  nginx:1.27 ",
                "Uppercase:tag",
                "a@b",
                &"x".repeat(300),
            ]
            .map(String::from),
        );
        // More distinct references than slots: every slot is overwritten many times.
        inputs.extend((0..1000).map(|i| format!("registry.example/team-{}/app:v{i}", i % 37)));
        for round in 0..3 {
            for input in &inputs {
                let (cached, parsed) = (Image::recent(input), Image::new(input));
                assert_eq!(cached, parsed, "round {round}: {input:?}");
                assert_eq!(cached.canonical(), parsed.canonical(), "{input:?}");
            }
        }
    }

    #[test]
    fn rejects_the_upstream_invalid_table() {
        use Invalid::*;
        let sha = format!("sha256:{}", f(64));
        let hex = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";
        let cases: Vec<(String, Invalid)> = vec![
            ("".into(), Empty),
            (":justtag".into(), Path),
            (format!("@{sha}"), Path),
            (format!("repo@sha256:{}", f(34)), Digest),
            (format!("validname@invaliddigest:{}", f(64)), Digest),
            ("Uppercase:tag".into(), Path),
            ("test:5000/Uppercase/lowercase:tag".into(), Path),
            (format!("{}a:tag", "a/".repeat(128)), TooLong),
            // Valid for Parse upstream, but 10 over once `docker.io/` is prefixed.
            (
                format!("{}a:tag-puts-this-over-max", "a/".repeat(127)),
                TooLong,
            ),
            (format!("{}aa", "a/".repeat(122)), TooLong),
            ("aa/asdf$$^/aa".into(), Path),
            ("[2001:db8::1]".into(), Tag),
            ("[2001:db8::1]:5000".into(), Path),
            ("[2001:db8::1]:tag".into(), Path),
            ("[fe80::1%eth0]:5000/repo".into(), Domain),
            ("[fe80::1%@invalidzone]:5000/repo".into(), Digest),
            // normalize_test.go: invalid repository names.
            ("https://github.com/docker/docker".into(), Domain),
            ("docker/Docker".into(), Path),
            ("-docker".into(), Path),
            ("-docker/docker".into(), Path),
            ("-docker.io/docker/docker".into(), Domain),
            ("docker///docker".into(), Path),
            ("docker.io/docker/Docker".into(), Path),
            ("docker.io/docker///docker".into(), Path),
            ("[fc00::1]".into(), Tag),
            ("[fc00::1]:5000".into(), Path),
            ("fc00::1:5000/debian".into(), Domain),
            ("[fe80::1%eth0]:5000/debian".into(), Domain),
            ("[2001:db8:3:4::192.0.2.33]:5000/debian".into(), Domain),
            (hex.into(), Identifier),
            ("docker-/docker".into(), Path),
            ("-docker-/docker".into(), Path),
            ("____/____".into(), Path),
            ("_docker/_docker".into(), Path),
            ("dock..er/docker".into(), Domain),
            ("dock_.er/docker".into(), Domain),
            ("dock-.er/docker".into(), Domain),
            ("dock___er/docker".into(), Path),
            ("docker/".into(), Path),
            (
                format!(
                    "{}/docker",
                    ["this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255"; 4]
                        .join("_")
                ),
                TooLong,
            ),
            // Beyond the upstream tables.
            ("nginx:".into(), Tag),
            ("nginx:-1".into(), Tag),
            ("nginx:.1".into(), Tag),
            ("nginx:1 2".into(), Tag),
            (format!("nginx:{}", "t".repeat(129)), Tag),
            ("nginx@".into(), Digest),
            (format!("nginx@sha256:{}", "F".repeat(64)), Digest),
            (format!("nginx@sha256:{}", f(63)), Digest),
            (format!("nginx@sha1:{}", f(40)), Digest),
            (format!("nginx@@{sha}"), Digest),
            (format!("nginx@{sha}@{sha}"), Digest),
            ("foo_bar.com/x".into(), Domain),
            ("localhost:abc/x".into(), Domain),
            ("host:/x".into(), Domain),
            ("[]:5000/x".into(), Domain),
            ("[::1/x".into(), Domain),
            ("a-.com/x".into(), Domain),
            ("/x".into(), Path),
            ("x/".into(), Path),
            ("ngïnx".into(), Path),
            ("quay.io/Org/app".into(), Path),
            ("quay.io/org/app:v1:v2".into(), Path),
        ];
        let wrong: Vec<_> = cases
            .iter()
            .filter(|(input, want)| parse(input) != Err(*want))
            .map(|(input, _)| (input, parse(input)))
            .collect();
        assert!(wrong.is_empty(), "{wrong:?}");
        for (input, _) in cases {
            let img = Image::new(&input);
            assert_eq!(img.canonical(), input, "kept verbatim: {input}");
            assert!(!same(&input, "docker.io/library/nginx:latest"), "{input}");
        }
    }

    #[test]
    fn more_equivalences() {
        let sha = format!("sha256:{}", f(64));
        let ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/platform/api";
        let cases: Vec<(String, String, bool)> = vec![
            (
                "debian".into(),
                "index.docker.io/library/debian:latest".into(),
                true,
            ),
            ("docker.io/debian".into(), "library/debian".into(), true),
            (
                "127.0.0.1:5000/debian".into(),
                "127.0.0.1:5000/library/debian".into(),
                false,
            ),
            ("library/foo/bar".into(), "foo/bar".into(), false),
            ("Foo/bar".into(), "foo/bar".into(), false),
            (
                "[::1]:5000/repo".into(),
                "[::1]:5000/repo:latest".into(),
                true,
            ),
            ("[::1]:5000/repo".into(), "[::1]/repo".into(), false),
            (format!("{ecr}:v1.42.0"), format!("{ecr}:v1.42.0"), true),
            (format!("{ecr}:v1.42.0"), format!("{ecr}:v1.42.1"), false),
            (format!("{ecr}:v1.42.0@{sha}"), format!("{ecr}@{sha}"), true),
            (
                format!("{ecr}:v1.42.0@{sha}"),
                format!("{ecr}:v1.42.0"),
                true,
            ),
            // The implied `latest` is a tag too, for a digest added to an explicit `latest`.
            (format!("nginx:latest@{sha}"), "nginx".into(), true),
            (format!("nginx@{sha}"), "nginx".into(), false),
            (
                format!("nginx@{sha}"),
                format!("nginx@sha256:{}", "e".repeat(64)),
                false,
            ),
            (" nginx ".into(), "nginx:latest".into(), true),
            (" not a ref".into(), "not a ref ".into(), true),
        ];
        for (a, b, want) in cases {
            assert_eq!(same(&a, &b), want, "{a} vs {b}");
            assert_eq!(same(&b, &a), want, "{b} vs {a}");
            assert_eq!(Image::new(&a).same_as(&Image::new(&b)), want, "{a} vs {b}");
            assert_eq!(Image::new(&b).same_as(&Image::new(&a)), want, "{b} vs {a}");
        }
        assert_eq!(delta("nginx", "docker.io/library/nginx"), ":latest");
        assert_eq!(delta(&format!("{ecr}:1"), &format!("{ecr}:2")), ":2");
    }

    #[test]
    fn one_string_per_image() {
        // Already canonical: the written form is the canonical form, stored once.
        let img = Image::new("ghcr.io/org/app:v1");
        assert_eq!(img.buf.len(), "ghcr.io/org/app:v1".len());
        assert_eq!(
            (img.as_str(), img.canonical()),
            ("ghcr.io/org/app:v1", "ghcr.io/org/app:v1")
        );
        // Otherwise the canonical form follows the written one in the same string.
        let img = Image::new("nginx");
        assert_eq!(&*img.buf, "nginxdocker.io/library/nginx:latest");
        assert_eq!(
            format!("{img:?}"),
            r#"Image { raw: "nginx", canonical: "docker.io/library/nginx:latest" }"#
        );
    }

    #[test]
    fn keeps_the_written_form_for_messages() {
        let img = Image::new(" nginx:1.27 ");
        assert_eq!(img.as_str(), "nginx:1.27");
        assert_eq!(img.canonical(), "docker.io/library/nginx:1.27");
        assert_eq!(img.to_string(), "nginx:1.27");
    }
}
