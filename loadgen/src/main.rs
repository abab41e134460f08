//! `weir-loadgen run` drives a workload against a broker and writes a results directory;
//! `weir-loadgen compare` puts runs side by side (table and HTML chart).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use weir_loadgen::run::{self, RunOptions};
use weir_loadgen::workload::Workload;

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
    /// Executors (threads), one per core.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cores: usize,
    /// Do not pin executors to CPUs.
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
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Compare(args) => compare(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weir-loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut workload = Workload::load(&args.workload)?;
    if let Some(d) = args.duration {
        anyhow::ensure!(d > 0, "--duration must be at least 1 second");
        workload.duration_s = d;
    }
    if let Some(w) = args.warmup {
        workload.warmup_s = w;
    }
    anyhow::ensure!(args.cores >= 1 && args.cores <= 1024, "--cores must be 1 to 1024");
    let opts = RunOptions {
        bootstrap: args.bootstrap,
        workload,
        workload_path: args.workload,
        cores: args.cores,
        pinned: !args.unpinned,
        out: args.out,
    };
    let cluster = run::setup(&opts.bootstrap, &opts.workload)?;
    let result = run::run(&opts, cluster)?;
    let t = &result.totals;
    let secs = t.measured_us as f64 / 1e6;
    println!(
        "published {} (acked {} in the measured {:.1} s: {:.0} msg/s), publish p50 {} us p99 {} us max {} us, errors {:?}",
        t.all.sent,
        t.measured.acked,
        secs,
        t.measured.acked as f64 / secs.max(1e-9),
        t.data.publish.value_at_quantile(0.5),
        t.data.publish.value_at_quantile(0.99),
        t.data.publish.max(),
        t.all.errors
    );
    let producers: Vec<_> = result.reports.iter().flat_map(|r| r.producers.iter().cloned()).collect();
    let consumers: Vec<_> = result.reports.iter().flat_map(|r| r.consumers.iter().cloned()).collect();
    if !consumers.is_empty() {
        let d = weir_loadgen::verify::check(&producers, &consumers);
        println!(
            "e2e p50 {} us p99 {} us max {} us; delivery {:?}",
            t.data.e2e.value_at_quantile(0.5),
            t.data.e2e.value_at_quantile(0.99),
            t.data.e2e.max(),
            d
        );
    }
    if let Some(f) = result.fatal {
        anyhow::bail!("run stopped: {f}");
    }
    Ok(ExitCode::SUCCESS)
}

fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let _ = args.out;
    anyhow::bail!("compare is not written yet ({} runs)", args.runs.len())
}
