//! helm-guard: an admission webhook that keeps Helm-managed workloads honest.
//!
//! A Helm release records what it deployed: every revision is a Secret (or ConfigMap) holding
//! the rendered manifest. helm-guard reads those records, reduces each to the images of the
//! workloads it renders, and judges every write to a workload against them: an image changed
//! by hand to something the deployed release does not render is drift — denied in `enforce`,
//! let through and marked in `audit`.
//!
//! ```text
//!  release Secrets ──decode once──> store::Index ──read──┐
//!  (helm::record, bounded)          (RevisionIndex per   │
//!                                    revision, workload  │
//!                                    → release map)      ▼
//!  API server ──TLS──> transport ──> server ──> admission ──> policy::decide ──> AdmissionReview
//!                      (timeouts,    (routes,   (one typed    (pure: no I/O,     (deny / warnings /
//!                       limits,       deadline,  pass, else    no kube, no        audit annotations /
//!                       drain)        logs)      a careful     axum, no tokio)    JSON patch)
//!                                                reading:
//!                                                Judged |
//!                                                NotChecked |
//!                                                Invalid)
//! ```
//!
//! The decision is a plain function of (request facts, release view, settings): everything
//! that does I/O — HTTP, files, the cluster — sits around it, so the same decision runs in
//! the server, in the offline `review` and `scan` commands and in table tests. Release values
//! (which hold passwords) never leave [`helm::decode`]: only image references, names and
//! value paths are kept, so nothing else can reach a response, a log line or an error.
//!
//! The rooms, bottom-up (a module imports only from rooms below it):
//!
//! | layer | modules |
//! |---|---|
//! | vocabulary | [`text`] (what people read: bounds, escaping), [`image`] (references), [`workload`] (pod specs), [`release`] (status, keys) |
//! | values | [`values`] (image-valued paths, Helm's coalesce rules, stale pins) |
//! | releases | [`helm`] (records: decode, manifest, index of a revision) |
//! | decision | [`actor`] (who is writing), [`policy`] (admission decision, live judgement) |
//! | state | [`store`] (the index), [`watch`] (cluster watches feeding it), [`lookup`] (bounded fallback lookups), [`events`], [`metrics`] |
//! | edges | [`admission`] (wire adapter), [`server`] (routes), [`transport`] (connections), [`tls`], [`reload`] (certificate hot reload) |
//! | commands | [`review`], [`pins`], [`scan`], [`demo`] (the seed story, with the Helm record builder and test fixtures), [`cli`] |

pub mod actor;
pub mod admission;
pub mod allocator;
pub mod cli;
pub mod demo;
pub mod events;
pub mod helm;
pub mod image;
pub mod inventory;
pub mod lookup;
pub mod metrics;
pub mod pins;
pub mod policy;
pub mod release;
pub mod reload;
pub mod reports;
pub mod review;
pub mod scan;
pub mod server;
pub mod store;
pub mod text;
pub mod tls;
pub mod transport;
pub mod values;
pub mod watch;
pub mod workload;
