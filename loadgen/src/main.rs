//! `weir-loadgen run` drives a workload against a broker and writes a results directory;
//! `weir-loadgen compare` puts runs side by side (table and HTML chart).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use weir_loadgen::progress::Progress;
use weir_loadgen::results::{self, Summary, SummaryInput};
use weir_loadgen::run::{self, RunOptions};
use weir_loadgen::workload::Workload;
use weir_loadgen::{compare, hlog, verify};

#[derive(Parser)]
#[command(
    name = "weir-loadgen",
    version,
    about = "Load generator for Kafka-compatible brokers (Weir, Kafka, Redpanda)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload against a broker and write a results directory.
    Run(RunArgs),
    /// Compare result directories: a table on stdout and an HTML percentile chart.
    Compare(CompareArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Any broker of the cluster.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: String,
    /// Workload TOML file (see config/workloads/).
    #[arg(long, value_name = "FILE")]
    workload: PathBuf,
    /// Measured seconds (overrides the workload's duration_s).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<u64>,
    /// Warm-up seconds before measuring (overrides the workload's warmup_s).
    #[arg(long, value_name = "SECONDS")]
    warmup: Option<u64>,
    /// Results go into DIR/<workload>-<UTC time>/.
    #[arg(long, value_name = "DIR", default_value = "results")]
    out: PathBuf,
    /// Executors (threads), one per core; producers and consumers are spread over them.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cores: usize,
    /// Do not pin executors to CPUs (by default they are pinned from the highest-numbered
    /// CPU down, away from a local broker's shards, which pin from CPU 0 up).
    #[arg(long)]
    unpinned: bool,
}

#[derive(Args)]
struct CompareArgs {
    /// Result directories; ratios are against the first.
    #[arg(required = true, value_name = "DIR")]
    runs: Vec<PathBuf>,
    /// HTML chart file.
    #[arg(long, value_name = "FILE.html", default_value = "compare.html")]
    out: PathBuf,
    /// Latency axis of the charts.
    #[arg(long, value_name = "SCALE", default_value = "log", value_parser = ["log", "linear"])]
    y_scale: String,
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk, a closed pipe) is lost;
        // the fallback would print the error to that same stderr and panic.
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let cli = Cli::parse();
    if let Err(e) = weir_loadgen::signals::install() {
        let _ = writeln!(std::io::stderr(), "weir-loadgen: cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Compare(args) => compare(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "weir-loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut workload = Workload::load(&args.workload)?;
    let mut overrides = Vec::new();
    if let Some(d) = args.duration {
        anyhow::ensure!(d > 0, "--duration must be at least 1 second");
        workload.duration_s = d;
        overrides.push(format!("--duration {d}"));
    }
    if let Some(w) = args.warmup {
        workload.warmup_s = w;
        overrides.push(format!("--warmup {w}"));
    }
    anyhow::ensure!(args.cores >= 1 && args.cores <= 1024, "--cores must be 1 to 1024");
    check_bootstrap(&args.bootstrap)?;
    let opts = RunOptions {
        bootstrap: args.bootstrap,
        workload,
        workload_path: args.workload,
        cores: args.cores,
        pinned: !args.unpinned,
        out: args.out,
    };
    let w = &opts.workload;
    let cluster = run::setup(&opts.bootstrap, w)?;
    let partitions = cluster.partitions.len() as u64;

    let started = SystemTime::now();
    let unix = started.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let dir = results::create_dir(&opts.out, &w.name, unix)
        .with_context(|| format!("cannot create a results directory in {}", opts.out.display()))?;
    results::write_workload(&dir, w, &opts.workload_path, &overrides.join(" "))?;

    let progress = Progress::new(w.warmup_s + w.duration_s);
    let mut hlog_error = None;
    let outcome = hlog::with_hlogs(&dir, started, |logs| {
        run::run(&opts, cluster, &mut |m, class, t0| {
            if hlog_error.is_none() {
                if let Err(e) = logs.write(m, class, t0) {
                    hlog_error = Some(e);
                }
            }
            progress.interval(m, class);
        })
    });
    progress.finish();
    let result = outcome??;
    if let Some(e) = &hlog_error {
        tracing::error!("interval log incomplete: {e}");
    }

    let producers: Vec<_> = result.reports.iter().flat_map(|r| r.producers.iter().cloned()).collect();
    let consumers: Vec<_> = result.reports.iter().flat_map(|r| r.consumers.iter().cloned()).collect();
    let has_consumers = w.consumers.count > 0;
    let delivery = (has_consumers && !consumers.is_empty()).then(|| verify::check(&producers, &consumers));
    let summary = Summary::build(SummaryInput {
        workload: w,
        workload_file: &opts.workload_path,
        bootstrap: &opts.bootstrap,
        started_unix: result.started_unix,
        interrupted: result.interrupted,
        fatal_error: result.fatal.clone(),
        totals: &result.totals,
        intervals: &result.intervals,
        delivery,
        cpu: result.cpu.clone(),
        partitions,
        has_consumers,
    });
    summary.write(&dir)?;
    let _ = write!(std::io::stdout(), "{}", summary.table(&dir));
    if let Some(f) = &result.fatal {
        let _ = writeln!(std::io::stderr(), "weir-loadgen: error: the run was stopped: {f}");
        return Ok(ExitCode::FAILURE);
    }
    if hlog_error.is_some() {
        return Ok(ExitCode::FAILURE);
    }
    if result.interrupted {
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// HOST:PORT (or [IPv6]:PORT) with a numeric port.
fn check_bootstrap(addr: &str) -> anyhow::Result<()> {
    let ok =
        addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    anyhow::ensure!(ok, "--bootstrap must be HOST:PORT (e.g. 127.0.0.1:9092), not {addr:?}");
    Ok(())
}

fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let runs = args
        .runs
        .iter()
        .map(|d| compare::RunData::load(d).with_context(|| format!("cannot read run {}", d.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let _ = write!(std::io::stdout(), "{}", compare::table(&runs));
    let scale = if args.y_scale == "linear" { compare::Scale::Linear } else { compare::Scale::Log };
    std::fs::write(&args.out, compare::html(&runs, scale))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let _ = writeln!(std::io::stdout(), "\nChart: {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
