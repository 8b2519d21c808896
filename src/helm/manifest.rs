//! `release.manifest` → the workloads it renders and their images.
//!
//! The manifest is every non-hook template Helm rendered, joined as `---\n# Source: …\n<doc>`.
//! It is split the way Helm splits it, and each document's top-level `kind:` is found by a
//! line scan *before* any YAML parsing: Services, ConfigMaps and (above all) Secrets are never
//! parsed, which keeps indexing fast and keeps Secret data out of the parser's error messages.
//! Workload documents are parsed with serde-saphyr (budget limits on: a record may be crafted)
//! into the small typed [`crate::workload::Spec`], not a generic value tree; a document in
//! plain block style is first cut down to the entries that type reads ([`super::prune`]).

use serde::Deserialize;

use super::{WorkloadImages, WorkloadKey};
use crate::workload::{Spec, WorkloadKind};

/// What indexing a manifest found.
#[derive(Debug, Default)]
pub struct ManifestIndex {
    pub workloads: Vec<WorkloadImages>,
    /// Non-empty documents seen.
    pub documents: u32,
    /// Workload documents (or documents of unknown kind) that did not parse.
    pub unparsable: u32,
}

/// Splits a manifest like Helm's `releaseutil.SplitManifests`, whose separator is the regex
/// `(?:^|\s*\n)---\s*`: a `---` at the start of the text or of a line. Empty documents are
/// dropped.
pub fn split_manifests(manifest: &str) -> impl Iterator<Item = &str> {
    let mut starts = vec![0usize];
    let bytes = manifest.as_bytes();
    let mut i = 0;
    while let Some(off) = manifest[i..].find("---") {
        let at = i + off;
        if at == 0 || bytes[at - 1] == b'\n' {
            starts.push(at);
        }
        i = at + 3;
    }
    starts.push(manifest.len());
    starts.dedup();
    let parts: Vec<&str> = starts
        .windows(2)
        .map(|w| {
            let part = &manifest[w[0]..w[1]];
            part.strip_prefix("---").unwrap_or(part).trim()
        })
        .filter(|d| !d.is_empty())
        .collect();
    parts.into_iter()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<Meta>,
    #[serde(default)]
    spec: Option<Spec>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// The value of a top-level `kind:` line, if the document has one in block style. `None`
/// means "unknown, parse to find out" (flow or JSON documents, odd quoting).
fn top_level_kind(doc: &str) -> Option<&str> {
    for line in doc.lines() {
        let rest = line
            .strip_prefix("kind:")
            .or_else(|| line.strip_prefix("\"kind\":"))
            .or_else(|| line.strip_prefix("'kind':"));
        if let Some(rest) = rest {
            let v = rest.split(" #").next().unwrap_or(rest).trim();
            let v = v.trim_matches(|c| c == '"' || c == '\'');
            return (!v.is_empty()).then_some(v);
        }
    }
    None
}

fn yaml_options() -> serde_saphyr::Options {
    // Budget limits stay at their defaults (alias bombs, event counts); snippets are off so
    // that no error can carry a piece of the document.
    serde_saphyr::options! { with_snippet: false }
}

fn parse(doc: &str) -> Result<Doc, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(doc, yaml_options())
}

/// The workload a parsed document renders, if it is one with a name.
fn workload_of(parsed: Doc, release_namespace: &str) -> Option<WorkloadImages> {
    let kind = WorkloadKind::from_api_version_kind(
        parsed.api_version.as_deref()?,
        parsed.kind.as_deref()?,
    )?;
    let meta = parsed.metadata?;
    let name = meta.name.filter(|n| !n.is_empty())?;
    let namespace = meta
        .namespace
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| release_namespace.to_owned());
    let containers = parsed.spec.unwrap_or_default().containers(kind);
    Some(WorkloadImages {
        key: WorkloadKey::new(kind, &namespace, &name),
        containers: containers.into_boxed_slice(),
    })
}

/// Whether the pruned reading of one document finds what the full parse finds: `None` when
/// they cannot be compared (pruning gave up, or either parse fails — a document broken only
/// in parts the index skips is read by design). For the fuzzer and tests.
#[doc(hidden)]
pub fn pruned_agrees(doc: &str) -> Option<bool> {
    let pruned = parse(&super::prune::prune(doc)?).ok()?;
    let full = parse(doc).ok()?;
    Some(workload_of(pruned, "ns") == workload_of(full, "ns"))
}

/// Indexes every workload a manifest renders. Objects without a namespace belong to
/// `release_namespace`; an explicit namespace is honoured.
pub fn index_manifest(manifest: &str, release_namespace: &str) -> ManifestIndex {
    let mut out = ManifestIndex::default();
    for doc in split_manifests(manifest) {
        out.documents += 1;
        match top_level_kind(doc) {
            Some(kind) if !WorkloadKind::ALL.iter().any(|k| k.as_str() == kind) => continue,
            _ => {}
        }
        // The pruned text when the document is plain block YAML (a fraction of the bytes to
        // scan); the whole document otherwise, or when the pruned text does not parse, so
        // that what does not parse is decided by the full parser alone.
        let pruned = super::prune::prune(doc).and_then(|text| parse(&text).ok());
        let parsed = match pruned.map_or_else(|| parse(doc), Ok) {
            Ok(d) => d,
            Err(_) => {
                out.unparsable += 1;
                continue;
            }
        };
        if let Some(w) = workload_of(parsed, release_namespace) {
            out.workloads.push(w);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_helm() {
        let m = "---\n# Source: a/templates/x.yaml\nkind: A\n---\n# Source: b\nkind: B\n\n---   \n\n---\nkind: C\nx: '---'\n";
        let docs: Vec<_> = split_manifests(m).collect();
        assert_eq!(docs.len(), 3, "{docs:?}");
        assert!(docs[0].contains("kind: A"));
        assert!(docs[2].contains("x: '---'"));
        assert_eq!(split_manifests("").count(), 0);
        assert_eq!(split_manifests("kind: A").count(), 1);
    }

    #[test]
    fn finds_kind_before_parsing() {
        assert_eq!(
            top_level_kind("apiVersion: v1\nkind: Secret\n"),
            Some("Secret")
        );
        assert_eq!(
            top_level_kind("kind: \"Deployment\" # c\n"),
            Some("Deployment")
        );
        // Nested kind: lines do not count.
        assert_eq!(top_level_kind("spec:\n  kind: Deployment\n"), None);
        assert_eq!(top_level_kind("{\"kind\": \"Pod\"}"), None);
    }

    const MANIFEST: &str = r#"---
# Source: pg/templates/secret.yaml
apiVersion: v1
kind: Secret
metadata:
  name: pg
data:
  password: Q0FOQVJZ
---
# Source: pg/templates/sts.yaml
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: pg
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: busybox:1.36
      containers:
        - name: postgresql
          image: "docker.io/bitnami/postgresql:15.4.0"
---
# Source: pg/templates/cron.yaml
apiVersion: batch/v1
kind: CronJob
metadata:
  name: backup
  namespace: ops
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: dump, image: "pg-dump:15"}]
---
# Source: pg/templates/broken.yaml
apiVersion: apps/v1
kind: Deployment
metadata: [unclosed
---
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
---
apiVersion: example.com/v1
kind: Deployment
metadata:
  name: not-ours
"#;

    #[test]
    fn indexes_workloads_and_survives_broken_documents() {
        let idx = index_manifest(MANIFEST, "db");
        assert_eq!(idx.documents, 6);
        assert_eq!(idx.unparsable, 1);
        let keys: Vec<String> = idx.workloads.iter().map(|w| w.key.to_string()).collect();
        assert_eq!(
            keys,
            ["StatefulSet db/pg", "CronJob ops/backup", "Pod db/p"],
            "namespace defaults to the release's, explicit ones are kept"
        );
        let sts = &idx.workloads[0];
        assert_eq!(sts.containers.len(), 2);
        assert_eq!(
            sts.containers[0].image.as_str(),
            "docker.io/bitnami/postgresql:15.4.0"
        );
        assert_eq!(idx.workloads[1].containers[0].image.as_str(), "pg-dump:15");
    }

    /// The pruned parse reads the same workload as the full one, document by document.
    #[test]
    fn pruning_reads_what_the_full_parse_reads() {
        let extra = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: j\n  labels: {a: b}\nspec:\n  template:\n    metadata:\n      annotations:\n        note: |\n          containers: []\n    spec:\n      volumes:\n      - name: v\n        emptyDir: {}\n      containers:\n      - command: [\"sh\", \"-c\"]\n        args:\n        - |\n          image: nope\n        image: 'repo/job:1' # pinned\n        name: run\n      - {name: second, image: \"x@sha256:00\"}\n";
        let docs: Vec<&str> = split_manifests(MANIFEST).chain([extra]).collect();
        let key = |d: Doc| {
            let kind = d.kind.unwrap_or_default();
            let spec = d.spec.unwrap_or_default();
            let containers = WorkloadKind::ALL
                .iter()
                .map(|k| spec.containers(*k))
                .collect::<Vec<_>>();
            (
                d.api_version,
                kind,
                d.metadata.map(|m| (m.name, m.namespace)),
                containers,
            )
        };
        let mut pruned_docs = 0;
        for doc in docs {
            let Some(text) = crate::helm::prune::prune(doc) else {
                continue;
            };
            pruned_docs += 1;
            assert!(
                text.len() <= doc.len() + 1,
                "at most a final line break more"
            );
            match (parse(doc), parse(&text)) {
                (Ok(full), Ok(pruned)) => assert_eq!(key(full), key(pruned), "{doc}"),
                (Err(_), _) => {}
                (Ok(_), Err(e)) => panic!("pruned text does not parse: {e}"),
            }
        }
        assert!(pruned_docs >= 4, "{pruned_docs}");
    }

    #[test]
    fn alias_bombs_hit_the_budget() {
        let mut doc = String::from(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
        );
        for i in 1..12 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let idx = index_manifest(&doc, "db");
        assert_eq!(idx.unparsable, 1);
        assert!(idx.workloads.is_empty());
    }
}
