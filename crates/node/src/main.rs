use std::process::ExitCode;

use clap::Parser;

/// Every allocation of the daemon: per-message buffers and strings dominate its CPU per
/// transaction, and mimalloc's thread-local free lists make them cheaper than glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // reqwest and rustls are built without a default crypto provider; exactly one (ring) is
    // installed here, before anything can ask for one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    sorcha_peer::cli::main(sorcha_peer::cli::Cli::parse())
}
