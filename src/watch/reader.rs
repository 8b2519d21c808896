//! Reading what a list left unread, for the one consumer that needs every revision of every
//! release: the drift inventory's stale-value gauges (`scan::stale_values` walks the history
//! of each release). Admission needs no such pass: the fallback lookup reads a release's
//! records when a `pending-upgrade` record of it is judged.
//!
//! Deferred, bounded and at low priority: nothing runs before every watch has listed (the
//! cold start stays as cheap as it is), nothing at all without an inventory attached to the
//! feed, then one release at a time — Helm's own query, `owner=helm,name=<release>` in the
//! release namespace — decoded on the decode threads and applied through the feed as a
//! lookup is (attributed to the watch covering it, so its next relist reconciles it).

use std::sync::Arc;
use std::time::Duration;

use kube::api::ListParams;
use kube::{Api, Client};
use tracing::{debug, info};

use super::feed::{Feed, Record, ReleaseObject, decode_object};
use super::object::{ConfigMapRecord, SecretRecord};
use super::pool;
use crate::helm::ReleaseKey;

/// How often the reader looks for unread revisions (a relist may leave new ones).
const PERIOD: Duration = Duration::from_secs(1);

/// Reads the unread revisions of each release, one release at a time, forever.
pub async fn run(client: Client, feed: Arc<Feed>, configmaps: bool) {
    loop {
        tokio::time::sleep(PERIOD).await;
        if !feed.is_ready() || !feed.has_consumer() {
            continue;
        }
        let pending = {
            let index = feed.index().read().unwrap_or_else(|e| e.into_inner());
            index.unread_releases()
        };
        if pending.is_empty() {
            continue;
        }
        let (mut read, total) = (0usize, pending.len());
        for key in pending {
            // Names come from object names: only a valid release name reaches a selector.
            if !crate::lookup::is_release_name(&key.name) {
                continue;
            }
            read += read_release::<SecretRecord>(&client, &feed, &key).await;
            if configmaps {
                read += read_release::<ConfigMapRecord>(&client, &feed, &key).await;
            }
            tokio::task::yield_now().await;
        }
        info!(releases = total, revisions = read, "unread revisions read");
    }
}

/// Lists and applies the records of one release; how many revisions were read.
async fn read_release<K: ReleaseObject>(
    client: &Client,
    feed: &Arc<Feed>,
    key: &ReleaseKey,
) -> usize {
    let api: Api<K> = Api::namespaced(client.clone(), &key.namespace);
    let selector = format!("owner=helm,name={}", key.name);
    let items = match api.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list.items,
        Err(error) => {
            // Tried again on the next pass; the message carries no record content.
            debug!(release = %key, %error, "reading unread revisions failed");
            return 0;
        }
    };
    let limits = feed.limits();
    let records: Vec<Record> = pool::run(move || {
        items
            .iter()
            .map(|obj| decode_object(obj, limits))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default()
    .into_iter()
    // Only records of this very release count (the label could lie).
    .filter(|r| !matches!(r, Record::Revision(rev, _) if rev.release != *key))
    .collect();
    let read = records
        .iter()
        .filter(|r| matches!(r, Record::Revision(..)))
        .count();
    feed.apply_lookup(K::KIND, &key.namespace, records);
    read
}
