use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // reqwest and rustls are built without a default crypto provider; exactly one (ring) is
    // installed here, before anything can ask for one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    sorcha_peer::cli::main(sorcha_peer::cli::Cli::parse())
}
