//! What Linux says about a process: CPU time, open descriptors, threads, memory, read
//! calls, and the descriptor limit.
//!
//! Contract. Readings come from `/proc/<pid>/…` (`pid` is a number or `self`); a process
//! that is gone, or a field that is missing, reads as zero rather than failing the bench.
//! CPU times are in seconds (`utime + stime` over the clock tick).

use std::fs;

/// One look at a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// User plus system CPU time so far, threads that exited included, in seconds.
    pub cpu_s: f64,
    /// Open file descriptors.
    pub fds: usize,
    /// Threads.
    pub threads: usize,
    /// Peak resident memory, in KiB (`VmHWM`).
    pub peak_rss_kib: u64,
    /// `read`-family system calls so far (`syscr`; socket `recv`/`send` are not counted).
    pub read_calls: u64,
}

/// Context switches of a process's live threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Switches {
    /// The threads blocked (waited for input, a lock, a timer).
    pub voluntary: u64,
    /// Their time slice ran out while they had work.
    pub forced: u64,
}

/// The context switches of process `pid`'s live threads, summed.
#[must_use]
pub fn switches(pid: &str) -> Switches {
    threads(pid)
        .iter()
        .fold(Switches::default(), |sum, t| Switches {
            voluntary: sum.voluntary + keyed(&t.status, "voluntary_ctxt_switches"),
            forced: sum.forced + keyed(&t.status, "nonvoluntary_ctxt_switches"),
        })
}

/// Seconds per `/proc` clock tick.
fn tick() -> f64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1.0 / if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// The fields after the command name of a `stat` file (the name may hold spaces and
/// parentheses, so the split is at the last `)`); index 0 is field 3, the state.
fn stat_fields(text: &str) -> Vec<&str> {
    text.rsplit_once(')')
        .map_or_else(Vec::new, |(_, rest)| rest.split_whitespace().collect())
}

fn field(fields: &[&str], number: usize) -> u64 {
    fields
        .get(number - 3)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds of a `stat` file's text (fields 14 and 15).
fn cpu_of(text: &str) -> f64 {
    let f = stat_fields(text);
    (field(&f, 14) + field(&f, 15)) as f64 * tick()
}

/// A `Key:   value` line of a `status` or `io` file.
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Looks at process `pid`.
#[must_use]
pub fn sample(pid: &str) -> Sample {
    let read = |what: &str| fs::read_to_string(format!("/proc/{pid}/{what}")).unwrap_or_default();
    let stat = read("stat");
    let status = read("status");
    let io = read("io");
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    Sample {
        cpu_s: cpu_of(&stat),
        fds,
        threads: field(&stat_fields(&stat), 20) as usize,
        peak_rss_kib: keyed(&status, "VmHWM"),
        read_calls: keyed(&io, "syscr"),
    }
}

/// One live thread of a process.
struct Task {
    name: String,
    stat: String,
    status: String,
}

fn threads(pid: &str) -> Vec<Task> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|entry| {
            let path = entry.path();
            let read = |what: &str| fs::read_to_string(path.join(what)).unwrap_or_default();
            Task {
                name: read("comm").trim().to_string(),
                stat: read("stat"),
                status: read("status"),
            }
        })
        .collect()
}

/// CPU seconds of this process's live threads whose name starts with `prefix`.
#[must_use]
pub fn threads_cpu(prefix: &str) -> f64 {
    threads("self")
        .iter()
        .filter(|t| t.name.starts_with(prefix))
        .map(|t| cpu_of(&t.stat))
        .sum()
}

/// Raises this process's soft descriptor limit to `want` (at most the hard limit) and
/// returns the soft limit now in force; children (mosquitto) inherit it.
#[must_use]
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want.min(limit.rlim_max),
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// The machine's TCP counters that show a listener overwhelmed (`/proc/net/netstat`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp {
    /// Connections refused because a listen queue was full (`ListenOverflows`).
    pub listen_overflows: u64,
    /// SYNs sent again: a connect that was not answered in time (`TCPSynRetrans`).
    pub syn_retransmits: u64,
}

/// The machine's [`Tcp`] counters now (every process's, the bench's nearly all of them).
#[must_use]
pub fn tcp() -> Tcp {
    let text = fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return Tcp::default();
    };
    let get = |name: &str| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    Tcp {
        listen_overflows: get("ListenOverflows"),
        syn_retransmits: get("TCPSynRetrans"),
    }
}
