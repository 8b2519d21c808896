use std::process::ExitCode;

use clap::Parser;

/// jemalloc, configured in src/allocator.rs.
#[global_allocator]
static ALLOCATOR: helm_guard::allocator::Allocator = helm_guard::allocator::Allocator;

fn main() -> ExitCode {
    // One crypto provider for the whole process, before anything touches rustls.
    helm_guard::tls::install_provider();
    helm_guard::cli::run(helm_guard::cli::Args::parse())
}
