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

/// Transparent huge pages off for this process, before its first allocation: the C runtime
/// calls this from `.init_array` (priority 99 runs before the default constructors), ahead of
/// Rust's runtime set-up and `main`. mimalloc asks the kernel for huge pages on its arenas
/// (`madvise(MADV_HUGEPAGE)`, its `allow_thp` default), so the first touch of each fresh 2 MiB
/// region faulted in a whole huge page and zeroed it.
/// - In `peer-lab run propagation` (20 nodes growing in step on 2 cores) a fifth of the CPU
///   in those moments was `clear_page_erms` under hash-table growth, and the hops slower than
///   30 ms all fell in them (`crates/lab/README.md`, session 14).
/// - Called from `main` (as it was), the first arena's first huge page was already faulted
///   by the runtime's first allocation: in `peer-lab run scale-shipped` (100 nodes started at
///   once) that zeroing was 69 % of the main threads' CPU, ~35 ms per process (session 15).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array.00099")]
static NO_TRANSPARENT_HUGE_PAGES: extern "C" fn() = no_transparent_huge_pages;

#[cfg(target_os = "linux")]
extern "C" fn no_transparent_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integers and touches no memory of ours;
    // it allocates nothing, so it is sound before the Rust runtime is set up. A kernel
    // without it answers -1 and the process keeps huge pages: slower, not wrong, so the
    // answer is not checked.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
