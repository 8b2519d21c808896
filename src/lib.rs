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
//!  (helm::decode, bounded)          (RevisionIndex per   │
//!                                    revision, workload  │
//!                                    → release map)      ▼
//!  API server ──TLS──> server ──> admission::facts ──> policy::decide ──> AdmissionReview
//!                      (limits,    (AdmissionReview →   (pure: no I/O,    (deny / warnings /
//!                       deadline)   policy::Request)     no kube, no       audit annotations /
//!                                                        axum, no tokio)   JSON patch)
//! ```
//!
//! The decision is a plain function of (request facts, release view, settings): everything
//! that does I/O — HTTP, files, the cluster — sits around it, so the same decision runs in
//! the server, in the offline `review` command and in table tests. Release values (which
//! hold passwords) never leave [`helm::decode`]: only image references, names and value paths
//! are kept, so nothing else can reach a response, a log line or an error.
//!
//! Modules: [`helm`] (release records), [`image`] (references), [`workload`] (pod specs),
//! [`actor`] (who is writing), [`policy`] (the decision), [`values`] (image-valued paths,
//! stale pins), [`store`] (the index), [`watch`] (cluster watches feeding it), [`lookup`]
//! (bounded fallback lookups), [`events`] (Kubernetes Events), [`metrics`] (Prometheus),
//! [`admission`] (wire adapter), [`server`] (HTTPS), [`tls`], [`client`], and the commands
//! [`review`], [`pins`], [`scan`], [`demo`], [`cli`].

pub mod actor;
pub mod admission;
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
