//! Container image references, compared the way a container runtime resolves them.
//!
//! A chart may render `postgres:15` while `kubectl set image` writes
//! `docker.io/library/postgres:15`: the same image. Parsing and normalisation are delegated to
//! `oci-spec`'s distribution `Reference` (the grammar of the distribution spec, with Docker
//! Hub's implicit `docker.io` registry, `library/` namespace and `latest` tag). On top of it
//! one rule of our own: when a reference carries a digest, the digest decides — the runtime
//! pulls by digest and ignores the tag, so `name:tag@sha256:…` equals `name@sha256:…`.
//!
//! A string that is not a valid reference is kept verbatim and only equals itself: a broken
//! image in a manifest must not make two different strings compare equal.

use std::fmt;

use oci_spec::distribution::Reference;

/// An image reference as written, with its canonical form for comparison.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Image {
    raw: Box<str>,
    canonical: Box<str>,
    /// `registry/repository:tag` when the reference has a tag (digest or not).
    tagged: Option<Box<str>>,
}

impl Image {
    /// Parses and normalises `raw`. Never fails: an unparsable reference compares verbatim.
    pub fn new(raw: &str) -> Self {
        let raw = raw.trim();
        let (canonical, tagged) = forms(raw);
        Self {
            raw: raw.into(),
            canonical: canonical.into_boxed_str(),
            tagged: tagged.map(String::into_boxed_str),
        }
    }

    /// The reference as the chart or the client wrote it (what users recognise in messages).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// `registry/repository:tag` or `registry/repository@digest`.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// Whether two references resolve to the same image. A digest decides between two
    /// digests; when only one side pins a digest (a digest-resolving mutator such as
    /// Kyverno's `mutateDigest` added it), equal tags are the same image.
    pub fn same_as(&self, other: &Image) -> bool {
        if self.canonical == other.canonical {
            return true;
        }
        let digests = (self.canonical.contains('@'), other.canonical.contains('@'));
        digests.0 != digests.1 && self.tagged.is_some() && self.tagged == other.tagged
    }
}

impl fmt::Display for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
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
    let repo = |s: &str| {
        s.parse::<Reference>().ok().map(|r| {
            (
                r.registry().to_owned(),
                r.repository().to_owned(),
                r.tag().map(str::to_owned),
                r.digest().map(str::to_owned),
            )
        })
    };
    match (repo(base), repo(other)) {
        (Some((br, bp, _, _)), Some((or, op, tag, digest))) if br == or && bp == op => {
            match (digest, tag) {
                (Some(d), _) => format!("@{d}"),
                (None, Some(t)) => format!(":{t}"),
                (None, None) => ":latest".to_owned(),
            }
        }
        _ => brief(other).to_owned(),
    }
}

/// Whether two reference strings resolve to the same image.
pub fn same(a: &str, b: &str) -> bool {
    a == b || Image::new(a).same_as(&Image::new(b))
}

/// The canonical form (digest if any, else tag) and the tagged form (if tagged).
fn forms(raw: &str) -> (String, Option<String>) {
    // Reference parsing lowercases nothing and rejects upper-case repositories, as runtimes do.
    match raw.parse::<Reference>() {
        Ok(r) => {
            let tagged = r
                .tag()
                .map(|t| format!("{}/{}:{}", r.registry(), r.repository(), t));
            let canonical = match r.digest() {
                Some(digest) => format!("{}/{}@{}", r.registry(), r.repository(), digest),
                None => format!(
                    "{}/{}:{}",
                    r.registry(),
                    r.repository(),
                    r.tag().unwrap_or("latest")
                ),
            };
            (canonical, tagged)
        }
        Err(_) => (raw.to_owned(), None),
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

    #[test]
    fn keeps_the_written_form_for_messages() {
        let img = Image::new(" nginx:1.27 ");
        assert_eq!(img.as_str(), "nginx:1.27");
        assert_eq!(img.canonical(), "docker.io/library/nginx:1.27");
        assert_eq!(img.to_string(), "nginx:1.27");
    }
}
