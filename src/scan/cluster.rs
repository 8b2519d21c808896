//! The cluster side of `scan`: list, like `kubectl get`, the release records (Secrets, and
//! ConfigMaps, labelled `owner=helm`) and then the workload kinds those releases render, in
//! pages (`limit`/`continue`). Each page is read by the same code as a file
//! ([`super::read`]): items are split raw and read straight into what is kept, and each
//! release record is decoded once.

use std::collections::BTreeSet;
use std::io::Write;

use super::{Inventory, Progress, ScanError, Scope};
use crate::helm::DecodeLimits;
use crate::policy::Releases;
use crate::workload::WorkloadKind;

/// Items per list page.
pub const PAGE: usize = 500;
/// Pages followed per list at most (a safety net against a server that never ends a list).
const MAX_PAGES: usize = 100_000;

fn base(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment
        | WorkloadKind::StatefulSet
        | WorkloadKind::DaemonSet
        | WorkloadKind::ReplicaSet => "/apis/apps/v1",
        WorkloadKind::Job | WorkloadKind::CronJob => "/apis/batch/v1",
        WorkloadKind::Pod => "/api/v1",
    }
}

/// Percent-encodes a query value (continue tokens are base64: `+`, `/`, `=`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The list URLs of one resource for the scope: one cluster-wide, or one per namespace.
fn urls(base: &str, resource: &str, scope: &Scope, selector: Option<&str>) -> Vec<String> {
    let query = match selector {
        Some(s) => format!("?limit={PAGE}&labelSelector={}", encode(s)),
        None => format!("?limit={PAGE}"),
    };
    match scope {
        Scope::All => vec![format!("{base}/{resource}{query}")],
        Scope::Only(list) => list
            .iter()
            .map(|ns| format!("{base}/namespaces/{}/{resource}{query}", encode(ns)))
            .collect(),
    }
}

/// The kinds to list for the releases known: what they render, plus the controllers and
/// Pods below them (owner templates, in-place Pod edits).
pub fn kinds_to_list(index: &impl ReleaseKinds) -> BTreeSet<WorkloadKind> {
    let mut kinds = BTreeSet::new();
    for k in index.rendered_kinds() {
        kinds.insert(k);
        match k {
            WorkloadKind::Deployment => {
                kinds.extend([WorkloadKind::ReplicaSet, WorkloadKind::Pod]);
            }
            WorkloadKind::CronJob => {
                kinds.extend([WorkloadKind::Job, WorkloadKind::Pod]);
            }
            WorkloadKind::StatefulSet
            | WorkloadKind::DaemonSet
            | WorkloadKind::ReplicaSet
            | WorkloadKind::Job => {
                kinds.insert(WorkloadKind::Pod);
            }
            WorkloadKind::Pod => {}
        }
    }
    kinds
}

/// The workload kinds the deployed revisions render.
pub trait ReleaseKinds {
    fn rendered_kinds(&self) -> BTreeSet<WorkloadKind>;
}

impl ReleaseKinds for crate::store::Index {
    fn rendered_kinds(&self) -> BTreeSet<WorkloadKind> {
        self.keys()
            .iter()
            .filter_map(|k| self.release(k).and_then(|v| v.deployed))
            .flat_map(|rev| rev.workloads.iter().map(|w| w.key.kind).collect::<Vec<_>>())
            .collect()
    }
}

async fn get(client: &kube::Client, url: &str) -> Result<String, ScanError> {
    let req = hyper::Request::get(url)
        .body(Vec::new())
        .map_err(|e| ScanError::Cluster(format!("GET {url}: {e}")))?;
    client
        .request_text(req)
        .await
        .map_err(|e| ScanError::Cluster(format!("GET {}: {e}", url_path(url))))
}

fn url_path(url: &str) -> &str {
    url.split_once('?').map_or(url, |(p, _)| p)
}

/// Follows one list through its pages, handing each page's text to `page`.
async fn list(
    client: &kube::Client,
    url: &str,
    mut page: impl FnMut(&str, &str) -> Result<Option<String>, ScanError>,
) -> Result<(), ScanError> {
    let mut next = url.to_owned();
    for _ in 0..MAX_PAGES {
        let text = get(client, &next).await?;
        match page(url_path(url), &text)? {
            Some(token) => next = format!("{url}&continue={}", encode(&token)),
            None => return Ok(()),
        }
    }
    Err(ScanError::Cluster(format!(
        "{}: more than {MAX_PAGES} pages",
        url_path(url)
    )))
}

/// Reads the release records and the workloads of the scope from the cluster.
pub async fn collect(
    client: &kube::Client,
    scope: &Scope,
    limits: DecodeLimits,
    configmaps: bool,
    progress: &mut Progress,
    err: &mut impl Write,
) -> Result<Inventory, ScanError> {
    let mut inv = Inventory::default();
    let mut record_urls = urls("/api/v1", "secrets", scope, Some("owner=helm"));
    if configmaps {
        record_urls.extend(urls("/api/v1", "configmaps", scope, Some("owner=helm")));
    }
    for url in &record_urls {
        list(client, url, |source, text| {
            let cont = inv.add_records(source, text, limits, err)?;
            progress.tick("the cluster", inv.index.len(), inv.workloads.len());
            Ok(cont)
        })
        .await?;
    }
    for kind in kinds_to_list(&inv.index) {
        for url in urls(base(kind), kind.resource(), scope, None) {
            list(client, &url, |source, text| {
                let cont = inv.add_workloads(source, text)?;
                progress.tick("the cluster", inv.index.len(), inv.workloads.len());
                Ok(cont)
            })
            .await?;
        }
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_per_scope() {
        assert_eq!(
            urls("/api/v1", "secrets", &Scope::All, Some("owner=helm")),
            ["/api/v1/secrets?limit=500&labelSelector=owner%3Dhelm"]
        );
        assert_eq!(
            urls(
                "/apis/apps/v1",
                "deployments",
                &Scope::Only(vec!["a".into(), "b".into()]),
                None
            ),
            [
                "/apis/apps/v1/namespaces/a/deployments?limit=500",
                "/apis/apps/v1/namespaces/b/deployments?limit=500"
            ]
        );
        assert_eq!(encode("ab+/=c"), "ab%2B%2F%3Dc");
    }
}
