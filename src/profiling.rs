//! Opt-in CPU profiling: `GET /debug/pprof/flamegraph?seconds=N` samples every thread of the hub
//! with an in-process sampling profiler (pprof-rs, driven by SIGPROF, so it works where `perf` is
//! not allowed) and answers an SVG flamegraph. Refused (404) unless `profiling.enabled` is true;
//! one profile at a time (409 while another runs).
//!
//! Owns the one-profile-at-a-time guard.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set while a profile is being taken.
static BUSY: AtomicBool = AtomicBool::new(false);

/// Samples per second.
const FREQUENCY: i32 = 499;

/// Why no flamegraph was produced.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Another profile is running.
    #[error("a profile is already being taken")]
    Busy,
    /// The profiler failed.
    #[error("profiler: {0}")]
    Failed(String),
}

/// Profiles the whole process for `seconds` and returns the flamegraph as SVG.
pub async fn flamegraph(seconds: f64) -> Result<Vec<u8>, ProfileError> {
    if BUSY.swap(true, Ordering::AcqRel) {
        return Err(ProfileError::Busy);
    }
    let duration = Duration::from_secs_f64(seconds.clamp(0.1, 300.0));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("streamhub-profiler".into())
        .spawn(move || {
            let _ = tx.send(sample(duration));
            BUSY.store(false, Ordering::Release);
        });
    if let Err(e) = spawned {
        BUSY.store(false, Ordering::Release);
        return Err(ProfileError::Failed(e.to_string()));
    }
    rx.await
        .map_err(|_| ProfileError::Failed("profiler thread ended".into()))?
}

/// Runs the sampler for `duration` on the calling thread.
fn sample(duration: Duration) -> Result<Vec<u8>, ProfileError> {
    let fail = |e: pprof::Error| ProfileError::Failed(e.to_string());
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(fail)?;
    std::thread::sleep(duration);
    let report = guard.report().build().map_err(fail)?;
    if report.data.is_empty() {
        return Err(ProfileError::Failed(
            "no samples: the process used no CPU while sampled".into(),
        ));
    }
    let mut svg = Vec::new();
    report.flamegraph(&mut svg).map_err(fail)?;
    Ok(svg)
}
