//! The `streamhub` command.
//!
//! Owns nothing: it parses the command line and hands over to `server` or `cli`.

use clap::{Parser, Subcommand};

/// jemalloc: with it an idle connection cost 7.35 KiB of hub RSS against 9.61 KiB with the
/// system allocator (the `idle` load-test scenario, 19,000 connections; 3.37 KiB now). mimalloc
/// was worse than the system allocator in an earlier build (26.3 against 19.3 KiB, 5,000
/// connections). Its statistics (`/debug/heap`, `/metrics`) attribute the bytes per connection.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use std::path::PathBuf;
use std::process::ExitCode;
use streamhub::cli;
use streamhub::config::{Config, LogFormat, Overrides};

/// streamhub: real-time WebSocket event fan-out.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of `serve`, also accepted without the subcommand.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve(ServeArgs),
    /// An operator tool.
    #[command(flatten)]
    Tool(Tool),
}

/// The operator tools.
#[derive(Subcommand)]
enum Tool {
    /// Publish one event, or a JSON array of events (from --event, or standard input), to Redis
    /// or a hub; prints each event's id.
    Publish {
        /// The event, as JSON; read from standard input when absent.
        #[arg(long)]
        event: Option<String>,
        /// Publish to this Redis (`{prefix}:all`) instead of a hub's broadcast endpoint.
        #[arg(long, env = "STREAMHUB_REDIS_URL")]
        redis_url: Option<String>,
        /// Publish to this Redis Cluster (sharded: `{prefix}:all` and `{prefix}:cluster:{id}`),
        /// given as comma-separated seed node URLs.
        #[arg(
            long,
            env = "STREAMHUB_REDIS_CLUSTER_NODES",
            value_delimiter = ',',
            conflicts_with = "redis_url"
        )]
        redis_cluster_nodes: Option<Vec<String>>,
        /// Channel prefix in Redis.
        #[arg(long, default_value = streamhub_wire::DEFAULT_PREFIX)]
        channel_prefix: String,
        /// The hub to post to.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Bearer token (internal role) when the hub has auth on.
        #[arg(long)]
        token: Option<String>,
        /// PEM certificates to trust for an `https://` hub.
        #[arg(long)]
        ca_file: Option<String>,
    },
    /// Connect as a client, subscribe, and print every message as a JSON line.
    Tail(cli::TailOptions),
    /// Ask a hub whether it is alive (GET /healthz); exit 0 when it answers 2xx, 1 otherwise.
    Health {
        /// The URL to ask.
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
    },
}

/// Options of `serve`.
#[derive(clap::Args, Clone, Default)]
struct ServeArgs {
    /// YAML configuration file (root key realtime_streaming); default config/default.yaml if present.
    #[arg(long, env = "STREAMHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Flags and environment variables over the file.
    #[command(flatten)]
    overrides: Overrides,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        None => cli.serve,
        Some(Command::Tool(tool)) => return run_tool(tool),
    };
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamhub: {e}");
            return ExitCode::from(2);
        }
    };
    init_log(config.log.format);
    match streamhub::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamhub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `publish` or `tail`.
fn run_tool(tool: Tool) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamhub: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match tool {
            Tool::Publish {
                event,
                redis_url,
                redis_cluster_nodes,
                channel_prefix,
                url,
                token,
                ca_file,
            } => {
                let event = match event {
                    Some(e) => e.into_bytes(),
                    None => {
                        let mut buf = Vec::new();
                        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                        buf
                    }
                };
                let target = match (redis_url, redis_cluster_nodes) {
                    (Some(url), _) => cli::Target::Redis {
                        url,
                        prefix: channel_prefix,
                    },
                    (None, Some(nodes)) => cli::Target::RedisCluster {
                        nodes,
                        prefix: channel_prefix,
                    },
                    (None, None) => cli::Target::Http {
                        base: url,
                        token,
                        ca_file,
                    },
                };
                for id in cli::publish(&event, target).await? {
                    println!("{id}");
                }
                Ok(())
            }
            Tool::Tail(options) => cli::tail(options).await,
            Tool::Health { url, timeout } => {
                let timeout = std::time::Duration::try_from_secs_f64(timeout)
                    .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
                cli::health(&url, timeout).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamhub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `STREAMHUB_LOG` (default `info`): text lines (coloured only on
/// a terminal) or one JSON object per line.
fn init_log(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("STREAMHUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => log.json().flatten_event(true).init(),
        LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Reads the configuration file (if any) and applies flags and environment.
fn load(args: &ServeArgs) -> Result<Config, streamhub::config::ConfigError> {
    let default_path = PathBuf::from("config/default.yaml");
    let base = match &args.config {
        Some(p) => Config::from_file(p)?,
        None if default_path.exists() => Config::from_file(&default_path)?,
        None => Config::default(),
    };
    base.apply(&args.overrides)
}
