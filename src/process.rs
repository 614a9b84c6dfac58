//! The process's own figures for `/metrics` (exposed by `metrics` under the names
//! Prometheus's client libraries use, `process_*`), read from `/proc/self` at scrape time:
//! resident memory, CPU seconds, open and maximum file descriptors, start time. Owns nothing;
//! on a system without `/proc` there are none.

/// What `/proc` says of this process now.
pub(crate) struct Figures {
    /// User and system CPU time, in seconds.
    pub(crate) cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub(crate) resident_bytes: f64,
    /// Start time, in seconds since the Unix epoch.
    pub(crate) start_time_seconds: f64,
    /// Open file descriptors.
    pub(crate) open_fds: Option<usize>,
    /// The soft limit on open files.
    pub(crate) max_fds: Option<f64>,
}

/// Clock ticks per second of `/proc` times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;
/// The page size of `/proc/self/stat`'s RSS (4 KiB on the platforms the hub runs on).
const PAGE: f64 = 4096.0;

/// The figures now; `None` without `/proc/self/stat` and `/proc/stat`.
pub(crate) fn figures() -> Option<Figures> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15, starttime 22, rss 24.
    let field = |n: usize| f.get(n - 3)?.parse::<f64>().ok();
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
    Some(Figures {
        cpu_seconds: (field(14)? + field(15)?) / TICKS,
        resident_bytes: field(24)? * PAGE,
        start_time_seconds: boot + field(22)? / TICKS,
        open_fds: std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count),
        max_fds: max_fds(),
    })
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let p = figures().expect("/proc is there");
        assert!(p.resident_bytes > 1e5);
        let open = p.open_fds.expect("open fds") as f64;
        assert!(open >= 3.0);
        assert!(p.max_fds.expect("max fds") >= open);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds;
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
        assert!(p.cpu_seconds >= 0.0);
    }
}
