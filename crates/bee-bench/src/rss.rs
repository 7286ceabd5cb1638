//! B6: a process's resident memory, from `/proc/<pid>/status`, and its CPU time, from
//! `/proc/<pid>/task/*/schedstat` (Linux).

use serde::Serialize;

use crate::BenchError;

/// Memory figures of a process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rss {
    /// `VmRSS`: resident now.
    pub rss_kb: u64,
    /// `VmHWM`: the most it has been resident since it started.
    pub hwm_kb: u64,
}

/// Read `VmRSS` and `VmHWM` of process `pid`.
pub fn read(pid: u32) -> Result<Rss, BenchError> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| BenchError::Proc {
            pid,
            reason: e.to_string(),
        })?;
    parse_status(&text).ok_or_else(|| BenchError::Proc {
        pid,
        reason: "no VmRSS/VmHWM lines (is it a kernel thread or a zombie?)".into(),
    })
}

/// Nanoseconds process `pid`'s live threads have run on a CPU (the first field of each
/// thread's `schedstat`, summed).
pub fn cpu_ns(pid: u32) -> Result<u64, BenchError> {
    let err = |reason: String| BenchError::Proc { pid, reason };
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| err(e.to_string()))?;
    let mut total = 0u64;
    for task in tasks {
        let path = task
            .map_err(|e| err(e.to_string()))?
            .path()
            .join("schedstat");
        // A thread may end between the listing and the read: it no longer counts.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += parse_schedstat(&text)
            .ok_or_else(|| err(format!("unreadable {}: {text:?}", path.display())))?;
    }
    Ok(total)
}

/// The run time (first field, nanoseconds) of a `schedstat` line.
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The `VmRSS` and `VmHWM` lines of a `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> Option<Rss> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    Some(Rss {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let text = "Name:\tbee\nVmPeak:\t  99999 kB\nVmHWM:\t    8120 kB\nVmRSS:\t    7004 kB\nThreads:\t3\n";
        assert_eq!(
            parse_status(text),
            Some(Rss {
                rss_kb: 7004,
                hwm_kb: 8120
            })
        );
        assert_eq!(parse_status("Name:\tkthreadd\n"), None);
        assert_eq!(parse_status("VmRSS:\tlots kB\nVmHWM:\t1 kB\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let r = read(std::process::id()).expect("own /proc status");
        assert!(r.rss_kb > 0 && r.hwm_kb >= r.rss_kb);
    }

    #[test]
    fn parses_schedstat() {
        assert_eq!(parse_schedstat("76033664 5079123 241\n"), Some(76_033_664));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn cpu_time_of_this_process_grows_with_work() {
        let before = cpu_ns(std::process::id()).expect("own schedstat");
        // Burn a little CPU on this thread.
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = cpu_ns(std::process::id()).expect("own schedstat");
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn cpu_time_of_a_missing_process_is_an_error() {
        // Above the kernel's pid_max (at most 2^22), so no process has it.
        let err = cpu_ns(u32::MAX).expect_err("no such process");
        assert!(err.to_string().contains(&u32::MAX.to_string()), "{err}");
    }
}
