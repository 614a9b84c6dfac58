//! The process's own figures for `/metrics`, read from `/proc/self` at scrape time, under the
//! names Prometheus's client libraries use (`process_*`): resident memory, CPU seconds, open and
//! maximum file descriptors, start time. Owns nothing; on a system without `/proc` the families
//! are left out.

use std::fmt::Write;

/// Appends the `process_*` families to `out`.
pub(crate) fn write_exposition(out: &mut String) {
    let Some(stat) = Stat::read() else {
        return;
    };
    let mut family = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        );
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent, in seconds.",
        stat.cpu_seconds,
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size, in bytes.",
        stat.resident_bytes,
    );
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
        stat.start_time_seconds,
    );
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        family(
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Some(max) = max_fds() {
        family(
            "process_max_fds",
            "gauge",
            "The open file descriptor limit.",
            max,
        );
    }
}

/// What `/proc/self/stat` says of the process.
struct Stat {
    /// utime + stime, in seconds.
    cpu_seconds: f64,
    /// RSS pages times the page size.
    resident_bytes: f64,
    /// Boot time plus the process's start, in seconds since the epoch.
    start_time_seconds: f64,
}

/// Clock ticks per second of `/proc` times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;
/// The page size of `/proc/self/stat`'s RSS (4 KiB on the platforms the hub runs on).
const PAGE: f64 = 4096.0;

impl Stat {
    /// Reads `/proc/self/stat` and `/proc/stat`'s boot time; `None` without them.
    fn read() -> Option<Self> {
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
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) / TICKS,
            resident_bytes: field(24)? * PAGE,
            start_time_seconds: boot + field(22)? / TICKS,
        })
    }
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
        let mut out = String::new();
        write_exposition(&mut out);
        let value = |name: &str| -> f64 {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in {out}"));
            line.split(' ').nth(1).unwrap().parse().unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e5);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
        assert!(value("process_cpu_seconds_total") >= 0.0);
    }
}
