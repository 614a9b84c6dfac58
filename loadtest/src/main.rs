//! `loadtest`: drive a streamhub (or any WebSocket fan-out server) with many clients and write
//! reports.

use clap::{Parser, Subcommand};
use loadtest::report::{self, Summary};
use loadtest::runner::{self, RunOptions};
use loadtest::scenario::Scenario;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Load-test harness for streamhub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario and write its reports to `<out>/<scenario>/`.
    Run {
        /// The scenario file (loadtest/scenarios/*.yaml).
        scenario: PathBuf,
        /// The streamhub binary to start.
        #[arg(long, default_value = "target/release/streamhub")]
        hub_bin: PathBuf,
        /// Where reports go.
        #[arg(long, default_value = "loadtest/reports")]
        out: PathBuf,
        /// Also write a CPU flamegraph of the hub to `flamegraphs/<scenario>.svg`.
        #[arg(long)]
        flamegraph: bool,
        /// Override the number of clients.
        #[arg(long)]
        clients: Option<usize>,
        /// Override each step's duration in seconds.
        #[arg(long)]
        step_seconds: Option<f64>,
        /// Replace the scenario's steps with one step at this many events/s.
        #[arg(long)]
        rate: Option<f64>,
        /// Report directory name (default: the scenario's name).
        #[arg(long)]
        label: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Process id of a server the harness did not start (a peer), for its CPU and memory
        /// from `/proc` (overrides `target.pid`).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Draw the latency percentile curves of two or more runs on one chart.
    Report {
        /// `summary.json` files (or the directories holding them).
        runs: Vec<PathBuf>,
        /// The SVG to write.
        #[arg(long, default_value = "loadtest/reports/compare.svg")]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            scenario,
            hub_bin,
            out,
            flamegraph,
            clients,
            step_seconds,
            rate,
            label,
            quiet,
            pid,
        } => {
            let mut s = Scenario::load(&scenario)?;
            if pid.is_some() {
                s.target.pid = pid;
            }
            let name = label.unwrap_or_else(|| s.name.clone());
            let opts = RunOptions {
                hub_bin,
                flamegraph: flamegraph
                    .then(|| PathBuf::from("flamegraphs").join(format!("{name}.svg"))),
                progress: !quiet,
                clients,
                step_seconds,
                rate,
            };
            let summary = runner::run(&s, &opts).await?;
            let dir = out.join(&name);
            report::write_all(&summary, &dir)?;
            println!("{}", report::markdown(&summary));
            println!("reports written to {}", dir.display());
        }
        Command::Report { runs, out } => {
            anyhow::ensure!(runs.len() >= 2, "give at least two runs");
            let mut summaries = Vec::new();
            for r in &runs {
                let path = if r.is_dir() {
                    r.join("summary.json")
                } else {
                    r.clone()
                };
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let s: Summary = serde_json::from_str(&text)?;
                summaries.push((
                    path.parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    s,
                ));
            }
            let series: Vec<(&str, &Vec<(f64, f64)>)> = summaries
                .iter()
                .map(|(n, s)| (n.as_str(), &s.percentile_curve))
                .collect();
            loadtest::chart::percentiles(&out, &series)?;
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}
