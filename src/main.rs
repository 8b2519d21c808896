use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before any thread: how many malloc arenas the process may have.
    helm_guard::allocator::configure();
    // One crypto provider for the whole process, before anything touches rustls.
    helm_guard::tls::install_provider();
    helm_guard::cli::run(helm_guard::cli::Args::parse())
}
