//! What the integration-test crates share: the PostgreSQL release of the seed story, the
//! manual rollback of its StatefulSet, and an index built from its records through the real
//! decoder. Each crate uses a part of it.
#![allow(dead_code)]

use std::sync::{Arc, RwLock};

use helm_guard::demo::build::History;
use helm_guard::demo::fixtures::Edit;
use helm_guard::store::SharedIndex;
use helm_guard::workload::WorkloadKind;

pub const PG11: &str = "docker.io/bitnami/postgresql:11.22.0";
pub const PG15: &str = "docker.io/bitnami/postgresql:15.4.0";
pub const EXPORTER: &str = "docker.io/bitnami/postgres-exporter:0.15.0";

/// Release db/db: rev 1 (11, superseded) and rev 2 (15, deployed), `canary` as the password
/// in its values.
pub fn history(canary: &str) -> History {
    helm_guard::demo::build::postgres_history(canary)
}

/// `kubectl set image` of the StatefulSet back to PostgreSQL 11.
pub fn rollback() -> Edit {
    Edit::kubectl_set_image(
        WorkloadKind::StatefulSet,
        "db",
        "db-postgresql",
        "db",
        &[("postgresql", PG15), ("metrics", EXPORTER)],
        &[("postgresql", PG11), ("metrics", EXPORTER)],
    )
}

/// The index of every revision of `h`, decoded as the server decodes records, shared.
pub fn index_of(h: &History) -> SharedIndex {
    let idx = h.index();
    assert_eq!(idx.len(), 1, "the release decodes");
    Arc::new(RwLock::new(idx))
}
