use std::process::ExitCode;

use clap::Parser;

/// Every allocation of the daemon: per-message buffers and strings dominate its CPU per
/// transaction, and mimalloc's thread-local free lists make them cheaper than glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    no_transparent_huge_pages();
    // reqwest and rustls are built without a default crypto provider; exactly one (ring) is
    // installed here, before anything can ask for one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    sorcha_peer::cli::main(sorcha_peer::cli::Cli::parse())
}

/// Transparent huge pages off for this process. mimalloc asks the kernel for them on its
/// arenas (`madvise(MADV_HUGEPAGE)`, its `allow_thp` default, read before `main`), so the first
/// touch of each fresh 2 MiB region faulted in a whole huge page and zeroed it; nodes that grow
/// in step (the same transactions at the same pace) all paid that at once. In `peer-lab run
/// propagation` (20 nodes on 2 cores) a fifth of the CPU in those moments was
/// `clear_page_erms` under hash-table growth, and the hops slower than 30 ms all fell in them
/// (`crates/lab/README.md`, session 14). The flag covers the regions advised already.
fn no_transparent_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integers and touches no memory of ours. A
    // kernel without it answers -1 and the process keeps huge pages: slower, not wrong, so
    // the answer is not checked.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
