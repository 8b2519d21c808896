pub mod actor;
pub mod helm;
pub mod image;
pub mod policy;
pub mod store;
pub mod workload;
