//! CPU time and memory of a node process, from `/proc/PID/stat` and `/proc/PID/status`.

/// What `/proc` says of one process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set now (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set (VmHWM), KiB.
    pub peak_rss_kib: u64,
}

/// Reads `pid`'s sample; `None` once the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_seconds: cpu_ticks(&stat)? as f64 / clock_ticks_per_second(),
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        peak_rss_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// utime + stime (fields 14 and 15). The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   1234 kB` line of /proc/PID/status, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The 1-minute load average of the machine (0 if unreadable).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_survive_odd_process_names() {
        let stat = "4242 (sorcha (peer) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 25 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_lines_in_kib() {
        let status = "Name:\tsorcha-peer\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(51234));
        assert_eq!(status_kib(status, "VmRSS:"), Some(40000));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.peak_rss_kib >= me.rss_kib && me.rss_kib > 0);
    }
}
