//! Standard output for the client commands: a reader that goes away (`status | head`,
//! `events --follow | grep -m1 banned`) ends the process quietly with success, instead of
//! the panic `println!` gives on a closed pipe.

use std::io::Write;

/// Prints one line with `out!`'s arguments.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// Writes `args` and a newline to stdout.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        closed(&e);
    }
}

/// Writes raw bytes (a transaction body) to stdout.
pub fn bytes(data: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(data).and_then(|()| stdout.flush()) {
        closed(&e);
    }
}

/// A closed pipe means the reader has what it wanted: exit 0. Any other failure to write is
/// reported and exits 1.
fn closed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("sorcha-peer: cannot write to standard output: {e}");
    std::process::exit(1);
}
