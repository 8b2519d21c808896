//! Realistic fixtures shared by `benches/guard.rs` and `examples/load/`: a chart whose
//! manifest looks like a real application chart ([`chart`]), a fleet of ~1,000 releases
//! indexed through the real decode path and kubectl edits of them ([`fleet`]), and
//! AdmissionReviews shaped like the API server's ([`review`]). Every item here is used by
//! both; what only the bench needs lives in the bench.
//!
//! Everything is deterministic (a fixed-seed generator), so numbers are comparable between
//! runs.

pub mod chart;
pub mod fleet;
pub mod review;
mod rng;
