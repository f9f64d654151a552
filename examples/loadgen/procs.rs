//! What a server process tree costs, read from /proc: CPU time (utime + stime of every process
//! in the tree, all threads included), RSS and PSS; and Kamailio's shared-memory counters.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// The process `root` and all its descendants (Kamailio forks its workers).
pub(crate) fn tree(root: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(f) = stat_fields(pid) {
                if let Some(ppid) = f.get(1).and_then(|v| v.parse().ok()) {
                    parent.insert(pid, ppid);
                }
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, pp)| **pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// Fields of /proc/PID/stat after the command name: [0] state, [1] ppid, ... [11] utime,
/// [12] stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU time of a set of processes, in seconds: user (utime) and system (stime).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cpu {
    pub(crate) user: f64,
    pub(crate) sys: f64,
}

impl Cpu {
    pub(crate) fn total(self) -> f64 {
        self.user + self.sys
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            user: self.user - o.user,
            sys: self.sys - o.sys,
        }
    }
}

/// utime and stime of the processes (processes that are gone count 0).
pub(crate) fn cpu(pids: &[u32]) -> Cpu {
    let (u, s) = pids
        .iter()
        .filter_map(|&p| stat_fields(p))
        .filter_map(|f| {
            let u: f64 = f.get(11)?.parse().ok()?;
            let s: f64 = f.get(12)?.parse().ok()?;
            Some((u, s))
        })
        .fold((0.0, 0.0), |(a, b), (u, s)| (a + u, b + s));
    Cpu {
        user: u / clock_ticks(),
        sys: s / clock_ticks(),
    }
}

/// utime + stime of the processes, in seconds.
pub(crate) fn cpu_secs(pids: &[u32]) -> f64 {
    cpu(pids).total()
}

/// CPU seconds of this process (the generator).
pub(crate) fn self_cpu_secs() -> f64 {
    cpu_secs(&[std::process::id()])
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident set size of one process, KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:").unwrap_or(0)
}

/// Peak resident set size of one process, KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:").unwrap_or(0)
}

/// Proportional set size summed over the processes, KiB: shared pages (Kamailio's shared
/// memory) count once in total, not once per process.
pub(crate) fn pss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// Kamailio's shared memory (`core.shmmem`): (used, real_used) in bytes. `real_used` adds the
/// allocator's fragment headers.
pub(crate) fn kamailio_shm(ctl: &Path) -> Option<(u64, u64)> {
    let out = Command::new("kamcmd")
        .arg("-s")
        .arg(format!("unix:{}", ctl.display()))
        .arg("core.shmmem")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let field = |k: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(k)?.trim().parse().ok())
    };
    Some((field("used:")?, field("real_used:")?))
}
