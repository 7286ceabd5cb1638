//! B6: a process's resident memory, from `/proc/<pid>/status` (Linux).

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
}
