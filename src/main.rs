use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // One crypto provider for the whole process, before anything touches rustls.
    helm_guard::tls::install_provider();
    helm_guard::cli::run(helm_guard::cli::Args::parse())
}
