//! Process-level resources read from `/proc/self`: resident memory and open
//! file descriptors against their limit. File descriptors are a bounded
//! resource like any other (every connection and open blob holds one), so
//! they are exported for the same 70%/85% alerts.
//!
//! Must never: fail a scrape. On a system without `/proc` the sample is
//! simply absent.

use std::fs;

/// One reading of the process's resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessSample {
    pub resident_bytes: u64,
    pub open_fds: u64,
    /// The soft limit on open file descriptors (`None` if unlimited).
    pub max_fds: Option<u64>,
}

/// Reads the current process's resources, if `/proc` is there.
pub fn sample() -> Option<ProcessSample> {
    Some(ProcessSample {
        resident_bytes: resident_bytes()?,
        open_fds: fs::read_dir("/proc/self/fd").ok()?.count() as u64,
        max_fds: fd_limit(),
    })
}

/// Resident set size from `/proc/self/status` (`VmRSS`, in kB).
pub fn resident_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, "VmRSS:").map(|k| k * 1024)
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The soft `Max open files` limit from `/proc/self/limits`.
pub fn fd_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    parse_fd_limit(&limits)
}

fn parse_fd_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// Total memory of the machine, from `/proc/meminfo` (`MemTotal`).
pub fn memory_total_bytes() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&meminfo, "MemTotal:").map(|k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_soft_fd_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_fd_limit(text), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_fd_limit(unlimited), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample().expect("/proc is mounted on Linux");
        assert!(s.resident_bytes > 0);
        assert!(s.open_fds >= 3, "stdin, stdout, stderr at least");
        assert!(memory_total_bytes().unwrap() > s.resident_bytes);
    }
}
