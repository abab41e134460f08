//! `weir`: command line -> config -> tracing -> data directory -> shards -> wait for a
//! signal -> drain, close, write the clean-shutdown marker.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use weir::config::{Config, Update, BROKER_CONFIGS};
use weir::runtime::{Runtime, ShardEvent, DRAIN_TIMEOUT};

/// Marker written after a clean stop; its absence at start means recovery must scan.
const CLEAN_SHUTDOWN_MARKER: &str = ".weir_clean_shutdown";
const LOCK_FILE: &str = ".lock";
/// How long a port may keep accepting after its broker died before it counts as taken.
const PORT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest wait for every shard to recover its partitions and listen.
const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// glommio refuses to build an executor when RLIMIT_MEMLOCK is below this.
const LOCKED_MEMORY_MIN_BYTES: u64 = 512 * 1024;
/// io_uring buffer memory of the executor `weir groups` runs its client on (a few small requests).
const CLI_IO_MEMORY_BYTES: usize = 512 * 1024;

#[derive(Parser)]
#[command(name = "weir", version, about = "Weir: a Kafka-compatible message broker, thread-per-core on io_uring")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker until SIGINT or SIGTERM.
    #[command(after_help = "Settings come from the TOML file (--config), then the flags, then --set; \
`weir settings` lists every setting with what it does. Logs go to stderr. \
The broker needs a locked-memory limit (ulimit -l) of at least 512 KiB.")]
    Serve(ServeArgs),
    /// List every setting that config files and `--set` accept, with what it does.
    Settings,
    /// Show consumer groups: with no GROUP, every group and its state; with groups, the
    /// committed offset, log end, lag and owner of each partition.
    #[command(after_help = "The client runs on io_uring: like the broker, it needs a locked-memory limit \
(ulimit -l) of at least 512 KiB.")]
    Groups(GroupsArgs),
    /// The cluster: `weir cluster status` shows the controller quorum and the brokers.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Topics: list, describe (each partition's leader, replicas and ISR), create, delete,
    /// add partitions.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Records: `weir records delete` moves a partition's log start (DeleteRecords).
    #[command(subcommand)]
    Records(RecordsCommand),
    /// Configs of a topic, a broker, or the cluster-wide broker defaults: describe, alter.
    #[command(subcommand)]
    Configs(ConfigsCommand),
    /// Transactions: list the transactional ids the coordinators keep, describe one.
    #[command(subcommand)]
    Transactions(TransactionsCommand),
}

/// How a report is printed.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// Human-readable tables.
    Table,
    /// One JSON document, for scripts.
    Json,
}

/// Whose configs: exactly one of these.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
struct ConfigTarget {
    /// A topic's configs.
    #[arg(long)]
    topic: Option<String>,
    /// One broker's settings (asked of that broker).
    #[arg(long, value_name = "ID")]
    broker: Option<i32>,
    /// The dynamic defaults of every broker.
    #[arg(long)]
    broker_defaults: bool,
}

impl ConfigTarget {
    fn target(&self) -> weir::admin::configs::Target {
        use weir::admin::configs::Target;
        match (&self.topic, self.broker) {
            (Some(t), _) => Target::Topic(t.clone()),
            (None, Some(id)) => Target::Broker(id),
            (None, None) => Target::BrokerDefaults,
        }
    }
}

/// Changes to configs, as `kafka-configs.sh --alter` takes them.
#[derive(Args, Clone)]
struct Alterations {
    /// KEY=VALUE to set (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// KEY to remove, so the default (or the broker's setting) applies again (repeatable).
    #[arg(long = "delete", value_name = "KEY")]
    delete: Vec<String>,
    /// KEY=ITEM to add to a list config such as cleanup.policy (repeatable).
    #[arg(long = "append", value_name = "KEY=ITEM")]
    append: Vec<String>,
    /// KEY=ITEM to remove from a list config (repeatable).
    #[arg(long = "subtract", value_name = "KEY=ITEM")]
    subtract: Vec<String>,
    /// Only check the changes; apply nothing.
    #[arg(long)]
    validate_only: bool,
}

impl Alterations {
    fn parse(&self) -> anyhow::Result<Vec<weir::admin::configs::Alteration>> {
        use weir::admin::configs::Alteration;
        let pair = |flag: &str, text: &str| {
            text.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("--{flag} {text}: expected KEY=VALUE"))
        };
        let mut out = Vec::new();
        for t in &self.set {
            let (k, v) = pair("set", t)?;
            out.push(Alteration::Set(k, v));
        }
        out.extend(self.delete.iter().map(|k| Alteration::Delete(k.trim().to_string())));
        for t in &self.append {
            let (k, v) = pair("append", t)?;
            out.push(Alteration::Append(k, v));
        }
        for t in &self.subtract {
            let (k, v) = pair("subtract", t)?;
            out.push(Alteration::Subtract(k, v));
        }
        anyhow::ensure!(!out.is_empty(), "nothing to change: give --set, --delete, --append or --subtract");
        Ok(out)
    }
}

#[derive(Subcommand)]
enum ConfigsCommand {
    /// Each config's value and where it comes from (the topic, a broker's dynamic config,
    /// the cluster default, the static setting); only those not at their default unless --all.
    #[command(after_help = "Needs a locked-memory limit (ulimit -l) of at least 512 KiB, like the broker.")]
    Describe {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[command(flatten)]
        target: ConfigTarget,
        /// Every config, defaults included.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Changes configs (IncrementalAlterConfigs): topic configs and the broker settings
    /// that may change at runtime (`weir settings` marks them [dynamic]).
    #[command(after_help = "Needs a locked-memory limit (ulimit -l) of at least 512 KiB, like the broker.")]
    Alter {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[command(flatten)]
        target: ConfigTarget,
        #[command(flatten)]
        alterations: Alterations,
    },
}

#[derive(Subcommand)]
enum TransactionsCommand {
    /// Every transactional id, with its producer id, state and coordinator (asked of every
    /// broker: ListTransactions).
    #[command(after_help = "Needs a locked-memory limit (ulimit -l) of at least 512 KiB, like the broker.")]
    List {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Only transactions in these states (Kafka's names: Ongoing, PrepareCommit, ...).
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// Only transactions of these producer ids.
        #[arg(long = "producer-id", value_name = "ID")]
        producers: Vec<i64>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One transactional id's state at its coordinator: producer id and epoch, timeout,
    /// start, and the partitions of its open transaction (DescribeTransactions).
    #[command(after_help = "Needs a locked-memory limit (ulimit -l) of at least 512 KiB, like the broker.")]
    Describe {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(value_name = "TRANSACTIONAL_ID")]
        transactional_id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum RecordsCommand {
    /// Deletes a partition's records before OFFSET (-1: up to the high watermark); prints
    /// the new low watermark.
    #[command(after_help = "Needs a locked-memory limit (ulimit -l) of at least 512 KiB, like the broker.")]
    Delete {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(value_name = "TOPIC")]
        topic: String,
        #[arg(long, default_value_t = 0)]
        partition: i32,
        #[arg(long, allow_negative_numbers = true)]
        offset: i64,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Each partition's leader, leader epoch, replicas, in-sync replicas and offline
    /// replicas (every topic when none is named).
    #[command(after_help = "Needs a locked-memory limit (ulimit -l) of at least 512 KiB, like the broker.")]
    Describe {
        /// Any broker of the cluster.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Topics to describe.
        #[arg(value_name = "TOPIC")]
        topics: Vec<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The topics' names.
    List {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Internal topics (`__consumer_offsets`) too.
        #[arg(long)]
        internal: bool,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Changes a topic's configs (as `weir configs alter --topic`).
    Alter {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(value_name = "TOPIC")]
        topic: String,
        #[command(flatten)]
        alterations: Alterations,
    },
    /// Creates a topic (the broker's num.partitions and default.replication.factor unless
    /// given).
    Create {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(value_name = "TOPIC")]
        topic: String,
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// A topic config, KEY=VALUE (repeatable), e.g. --config retention.ms=3600000.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Deletes topics (and their data).
    Delete {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(value_name = "TOPIC", required = true)]
        topics: Vec<String>,
    },
    /// Grows a topic to PARTITIONS partitions in all (Kafka never shrinks one).
    AddPartitions {
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(value_name = "TOPIC")]
        topic: String,
        #[arg(long)]
        partitions: i32,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// The quorum (leader, epoch, each voter's log end and lag) and the brokers (id,
    /// listener, alive or fenced, partitions led).
    #[command(after_help = "Needs a locked-memory limit (ulimit -l) of at least 512 KiB, like the broker.")]
    Status {
        /// Any broker of the cluster.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Args)]
struct GroupsArgs {
    /// A broker to ask (any Kafka-compatible broker).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Groups to describe; `--all` describes every group.
    #[arg(value_name = "GROUP")]
    groups: Vec<String>,
    /// Describe every group.
    #[arg(long)]
    all: bool,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// Reset the committed offsets of GROUP (inactive groups only; a dry run unless --execute).
    #[arg(long, requires = "to", conflicts_with = "delete_offsets")]
    reset_offsets: bool,
    /// Delete the committed offsets of GROUP for --topic (OffsetDelete).
    #[arg(long)]
    delete_offsets: bool,
    /// TOPIC or TOPIC:P,Q,... to reset or delete (repeatable).
    #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]")]
    topics: Vec<String>,
    /// Reset every partition the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    #[command(flatten)]
    to: Option<ResetTarget>,
    /// Commit the reset (without it, only the plan is shown).
    #[arg(long)]
    execute: bool,
}

/// Where `--reset-offsets` moves the offsets: exactly one of these.
#[derive(Args, Clone)]
#[group(id = "to", multiple = false)]
struct ResetTarget {
    #[arg(long)]
    to_earliest: bool,
    #[arg(long)]
    to_latest: bool,
    /// The first record at or after YYYY-MM-DDTHH:MM:SS[.mmm][Z|+HH:MM] (UTC unless given).
    #[arg(long, value_name = "DATETIME")]
    to_datetime: Option<String>,
    /// The committed offset plus N (negative: back).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML config file with Kafka-named settings (see config/single.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides `listeners`), e.g. 127.0.0.1:9092.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address clients are told to connect to (overrides `advertised.listeners`).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Data directory (overrides `log.dirs`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Data shards, one per core (overrides `weir.cores`; 0 = one per online CPU).
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
    /// Do not pin shards to CPUs (for tests and small shared machines).
    #[arg(long)]
    unpinned: bool,
    /// Any setting, as KEY=VALUE (repeatable; wins over the file). `weir settings` lists them.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG wins when set.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Settings => {
            for d in BROKER_CONFIGS {
                let default = d.default.map_or(String::new(), |v| format!(" (default {v})"));
                let dynamic = if d.update == Update::Dynamic { " [dynamic]" } else { "" };
                println!("{:<30} {}{default}{dynamic}", d.name, d.doc);
            }
            Ok(())
        }
        Command::Serve(args) => serve(args),
        Command::Groups(args) => groups(args),
        Command::Cluster(ClusterCommand::Status { bootstrap, output }) => on_cli_executor("weir-cluster", async move {
            let report = weir::admin::cluster::status(&bootstrap)
                .await
                .with_context(|| format!("cannot read the cluster's state from {bootstrap}"))?;
            match output {
                Output::Table => print!("{}", weir::admin::cluster::format_report(&report)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(())
        }),
        Command::Topics(command) => on_cli_executor("weir-topics", topics_command(command)),
        Command::Configs(command) => on_cli_executor("weir-configs", configs_command(command)),
        Command::Transactions(TransactionsCommand::List { bootstrap, states, producers, output }) => {
            on_cli_executor("weir-transactions", async move {
                let list = weir::admin::transactions::list(&bootstrap, &states, &producers)
                    .await
                    .with_context(|| format!("cannot list transactions through {bootstrap}"))?;
                match output {
                    Output::Table => print!("{}", weir::admin::transactions::format_list(&list)),
                    Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                }
                Ok(())
            })
        }
        Command::Transactions(TransactionsCommand::Describe { bootstrap, transactional_id, output }) => {
            on_cli_executor("weir-transactions", async move {
                let report =
                    weir::admin::transactions::describe(&bootstrap, &transactional_id).await.with_context(|| {
                        format!("cannot describe transactional id {transactional_id} through {bootstrap}")
                    })?;
                match output {
                    Output::Table => print!("{}", weir::admin::transactions::format_report(&report)),
                    Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                }
                Ok(())
            })
        }
        Command::Records(RecordsCommand::Delete { bootstrap, topic, partition, offset }) => {
            on_cli_executor("weir-records", async move {
                let low = weir::admin::topics::delete_records(&bootstrap, &topic, partition, offset)
                    .await
                    .with_context(|| format!("cannot delete records of {topic}-{partition} at {bootstrap}"))?;
                println!("{topic}-{partition}: records before {low} deleted (low watermark {low})");
                Ok(())
            })
        }
    }
}

async fn alter_configs(
    bootstrap: &str,
    target: &weir::admin::configs::Target,
    alterations: &Alterations,
    what: &str,
) -> anyhow::Result<()> {
    let changes = alterations.parse()?;
    weir::admin::configs::alter(bootstrap, target, &changes, alterations.validate_only).await.with_context(|| {
        format!("cannot alter the configs of {what} (`weir configs describe` shows them; `weir settings` lists the broker settings)")
    })?;
    if alterations.validate_only {
        println!("The changes to {what} are valid (nothing applied: --validate-only).");
    } else {
        println!("Altered the configs of {what}.");
    }
    Ok(())
}

async fn configs_command(command: ConfigsCommand) -> anyhow::Result<()> {
    use weir::admin::configs;
    let what = |t: &ConfigTarget| match t.target() {
        configs::Target::Topic(name) => format!("topic {name}"),
        configs::Target::Broker(id) => format!("broker {id}"),
        configs::Target::BrokerDefaults => "the broker defaults".to_string(),
    };
    match command {
        ConfigsCommand::Describe { bootstrap, target, all, output } => {
            let lines = configs::describe(&bootstrap, &target.target())
                .await
                .with_context(|| format!("cannot describe the configs of {}", what(&target)))?;
            match output {
                Output::Table => print!("{}", configs::format_table(&lines, all)),
                Output::Json => {
                    let shown: Vec<_> = lines.iter().filter(|l| all || l.source != "DEFAULT_CONFIG").collect();
                    println!("{}", serde_json::to_string_pretty(&shown)?)
                }
            }
        }
        ConfigsCommand::Alter { bootstrap, target, alterations } => {
            alter_configs(&bootstrap, &target.target(), &alterations, &what(&target)).await?;
        }
    }
    Ok(())
}

async fn topics_command(command: TopicsCommand) -> anyhow::Result<()> {
    use weir::admin::topics;
    match command {
        TopicsCommand::Describe { bootstrap, topics: names, output } => {
            let report = topics::describe(&bootstrap, &names)
                .await
                .with_context(|| format!("cannot read the topics from {bootstrap}"))?;
            match output {
                Output::Table => print!("{}", topics::format_report(&report)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            let failed: Vec<&str> = report.iter().filter(|t| t.error.is_some()).map(|t| t.name.as_str()).collect();
            anyhow::ensure!(failed.is_empty(), "cannot describe {}", failed.join(", "));
        }
        TopicsCommand::List { bootstrap, internal, output } => {
            let names = topics::list(&bootstrap, internal)
                .await
                .with_context(|| format!("cannot list topics at {bootstrap}"))?;
            match output {
                Output::Table => names.iter().for_each(|n| println!("{n}")),
                Output::Json => println!("{}", serde_json::to_string_pretty(&names)?),
            }
        }
        TopicsCommand::Alter { bootstrap, topic, alterations } => {
            let target = weir::admin::configs::Target::Topic(topic.clone());
            alter_configs(&bootstrap, &target, &alterations, &format!("topic {topic}")).await?;
        }
        TopicsCommand::Create { bootstrap, topic, partitions, replication_factor, configs } => {
            let configs = configs
                .iter()
                .map(|c| {
                    c.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .ok_or_else(|| anyhow::anyhow!("--config {c}: expected KEY=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            topics::create(&bootstrap, &topic, partitions, replication_factor, &configs)
                .await
                .with_context(|| format!("cannot create topic {topic}"))?;
            println!("Created topic {topic}.");
        }
        TopicsCommand::Delete { bootstrap, topics: names } => {
            topics::delete(&bootstrap, &names).await.with_context(|| format!("cannot delete {}", names.join(", ")))?;
            println!("Deleted {}.", names.join(", "));
        }
        TopicsCommand::AddPartitions { bootstrap, topic, partitions } => {
            topics::add_partitions(&bootstrap, &topic, partitions)
                .await
                .with_context(|| format!("cannot grow topic {topic}"))?;
            println!("Topic {topic} has {partitions} partitions.");
        }
    }
    Ok(())
}

/// `weir groups` runs the client on a small io_uring executor on this thread (it needs the
/// same locked-memory limit as the broker).
fn groups(args: GroupsArgs) -> anyhow::Result<()> {
    on_cli_executor("weir-groups", groups_report(args))
}

/// Runs a CLI command's client on a small io_uring executor on this thread.
fn on_cli_executor(name: &str, command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    check_locked_memory_limit()?;
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(CLI_IO_MEMORY_BYTES)
        .name(name)
        .make()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot start an io_uring executor: {e} (io_uring and a locked-memory limit of at least 512 KiB, `ulimit -l`, are needed)"
            )
        })?;
    executor.run(command)
}

/// `--reset-offsets` and `--delete-offsets` of one group.
async fn group_offsets(args: GroupsArgs) -> anyhow::Result<()> {
    use weir::admin::offsets::{self, ResetTo, Scope};
    let [group] = args.groups.as_slice() else {
        anyhow::bail!("name exactly one GROUP to reset or delete offsets of");
    };
    let topics = args.topics.iter().map(|t| offsets::parse_topic(t)).collect::<Result<Vec<_>, _>>()?;
    let bootstrap = args.bootstrap.as_str();
    if args.delete_offsets {
        anyhow::ensure!(!topics.is_empty(), "--delete-offsets needs --topic");
        let deleted = offsets::delete(bootstrap, group, &topics)
            .await
            .with_context(|| format!("cannot delete the offsets of group {group}"))?;
        for (t, p) in &deleted {
            println!("Deleted the committed offset of {t}-{p} for group {group}.");
        }
        return Ok(());
    }
    let to = args.to.as_ref().ok_or_else(|| {
        anyhow::anyhow!("--reset-offsets needs --to-earliest, --to-latest, --to-datetime, --shift-by or --to-offset")
    })?;
    let to = match (to.to_earliest, to.to_latest, &to.to_datetime, to.shift_by, to.to_offset) {
        (true, ..) => ResetTo::Earliest,
        (_, true, ..) => ResetTo::Latest,
        (_, _, Some(d), ..) => ResetTo::Datetime(offsets::parse_datetime(d)?),
        (_, _, _, Some(n), _) => ResetTo::ShiftBy(n),
        (_, _, _, _, Some(o)) => ResetTo::Offset(o),
        _ => {
            anyhow::bail!("--reset-offsets needs --to-earliest, --to-latest, --to-datetime, --shift-by or --to-offset")
        }
    };
    let scope = match (args.all_topics, topics.is_empty()) {
        (true, true) => Scope::AllTopics,
        (false, false) => Scope::Topics(topics),
        _ => anyhow::bail!("give either --topic (repeatable) or --all-topics"),
    };
    let rows = offsets::reset(bootstrap, group, &scope, to, args.execute)
        .await
        .with_context(|| format!("cannot reset the offsets of group {group}"))?;
    match args.output {
        Output::Table => print!("{}", offsets::format_plan(group, &rows, args.execute)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
    }
    Ok(())
}

async fn groups_report(args: GroupsArgs) -> anyhow::Result<()> {
    use weir::admin::groups;
    if args.reset_offsets || args.delete_offsets {
        return group_offsets(args).await;
    }
    let bootstrap = args.bootstrap.as_str();
    let listed = groups::list(bootstrap).await.with_context(|| format!("cannot list groups at {bootstrap}"))?;
    let names: Vec<String> = if args.all { listed.iter().map(|g| g.group.clone()).collect() } else { args.groups };
    if args.output == Output::Json {
        if names.is_empty() {
            println!("{}", serde_json::to_string_pretty(&listed)?);
            return Ok(());
        }
        let mut reports = Vec::new();
        for name in &names {
            reports.push(
                groups::describe(bootstrap, name).await.with_context(|| format!("cannot describe group {name}"))?,
            );
        }
        println!("{}", serde_json::to_string_pretty(&reports)?);
        let missing: Vec<&str> = reports.iter().filter(|r| groups::is_missing(r)).map(|r| r.group.as_str()).collect();
        anyhow::ensure!(missing.is_empty(), "no such group: {} (`weir groups` lists them)", missing.join(", "));
        return Ok(());
    }
    if names.is_empty() {
        if listed.is_empty() {
            println!("No consumer groups.");
        }
        let width = listed.iter().map(|g| g.group.len()).max().unwrap_or(5).max(5);
        if !listed.is_empty() {
            println!("{:<width$}  {:<20}  PROTOCOL-TYPE", "GROUP", "STATE");
        }
        for g in &listed {
            println!("{:<width$}  {:<20}  {}", g.group, g.state, g.protocol_type);
        }
        return Ok(());
    }
    let mut missing = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let report =
            groups::describe(bootstrap, name).await.with_context(|| format!("cannot describe group {name}"))?;
        if i > 0 {
            println!();
        }
        print!("{}", groups::format_report(&report));
        if groups::is_missing(&report) {
            missing.push(name.as_str());
        }
    }
    anyhow::ensure!(missing.is_empty(), "no such group: {} (`weir groups` lists them)", missing.join(", "));
    Ok(())
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut settings: Vec<(String, String)> = Vec::new();
    if let Some(path) = &args.config {
        settings.extend(Config::read_file(path)?);
    }
    if let Some(listen) = &args.listen {
        settings.push(("listeners".into(), listen.clone()));
    }
    if let Some(adv) = &args.advertise {
        settings.push(("advertised.listeners".into(), adv.clone()));
    }
    if let Some(dir) = &args.data_dir {
        settings.push(("log.dirs".into(), dir.display().to_string()));
    }
    if let Some(cores) = args.cores {
        settings.push(("weir.cores".into(), cores.to_string()));
    }
    if args.unpinned {
        settings.push(("weir.pin".into(), "false".into()));
    }
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else { bail!("--set takes KEY=VALUE, got `{kv}`") };
        settings.push((k.trim().to_string(), v.to_string()));
    }
    Ok(Config::from_settings(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))?)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log_level));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk, a closed pipe) is lost;
        // the fallback would print the error to that same stderr and panic.
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Handlers before anything else: a stop asked for while partitions recover or right after the first
    // answer must be a clean stop, not the default action of SIGTERM.
    let (signal_tx, signal_rx) = std::sync::mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .context("cannot install signal handlers")?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let _ = signal_tx.send(sig);
        }
    });
    let mut config = load_config(&args)?;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let lock = std::fs::File::create(data_dir.join(LOCK_FILE)).context("cannot create the data directory lock file")?;
    if lock.try_lock().is_err() {
        bail!("data directory {} is in use by another weir process", data_dir.display());
    }
    config.cluster_id = Some(cluster_id(&data_dir, &config)?);
    let clean = take_clean_marker(&data_dir)?;
    info!(data_dir = %data_dir.display(), clean_start = clean, shards = config.data_shards(), "starting");
    check_locked_memory_limit()?;
    config.descriptors = plan_descriptors(&config);
    if config.roles.broker {
        refuse_taken_port(config.listen)?;
    }
    if let Some(controller) = config.controller_listen.filter(|_| config.roles.controller) {
        refuse_taken_port(controller)?;
    }
    let config = Arc::new(config);
    let close_timeout = std::time::Duration::from_millis(config.close_timeout_ms);
    let mut runtime = Runtime::start(config.clone(), clean)?;

    let mut waiting = runtime.executors();
    let started = std::time::Instant::now();
    let mut stop_signal = None;
    while waiting > 0 {
        if stop_signal.is_none() {
            stop_signal = signal_rx.try_recv().ok();
            if let Some(sig) = stop_signal {
                info!(signal = sig, "stop requested during start; stopping once the shards are up");
            }
        }
        let left = STARTUP_TIMEOUT.saturating_sub(started.elapsed());
        match runtime.events.recv_timeout(left.min(std::time::Duration::from_millis(100))) {
            Ok(ShardEvent::Ready(_)) => waiting -= 1,
            Ok(ShardEvent::Failed { shard, error }) => {
                error!(shard, %error, "shard failed to start");
                runtime.drain(shard != 0);
                runtime.close(false, usize::from(shard > 0), close_timeout);
                bail!("startup failed: {error}");
            }
            Ok(other) => warn!(?other, "unexpected event during start"),
            Err(_) if left.is_zero() => {
                bail!("shards did not start within {STARTUP_TIMEOUT:?} (an executor failed to start; see the log)")
            }
            Err(_) => {}
        }
    }
    if config.roles.broker {
        info!(listen = %config.listen, advertised = ?config.advertised, "weir is ready");
    } else {
        info!(controller = ?config.controller_listen, "weir is ready (controller only)");
    }

    // Wait for a signal while watching for a shard failure.
    let mut healthy = true;
    let mut ended = 0;
    let mut control_running = true;
    while stop_signal.is_none() {
        if let Ok(sig) = signal_rx.recv_timeout(std::time::Duration::from_millis(200)) {
            info!(signal = sig, "stopping");
            break;
        }
        if let Ok(ShardEvent::Failed { shard, error }) = runtime.events.try_recv() {
            error!(shard, %error, "shard failed; stopping");
            healthy = false;
            ended += usize::from(shard > 0);
            control_running = shard != 0;
            break;
        }
    }
    runtime.drain(control_running);
    let data_shards = runtime.executors() - 1;
    let mut drained = ended;
    while drained < data_shards {
        match runtime.events.recv_timeout(DRAIN_TIMEOUT + std::time::Duration::from_secs(5)) {
            Ok(ShardEvent::Drained(shard)) if shard != 0 => drained += 1,
            Ok(ShardEvent::Failed { shard, error }) => {
                error!(shard, %error, "shard failed while draining");
                healthy = false;
                drained += 1;
                ended += 1;
            }
            Ok(_) => {}
            Err(_) => {
                error!("shards did not drain in time");
                healthy = false;
                break;
            }
        }
    }
    let clean = runtime.close(healthy, ended, close_timeout);
    if clean {
        write_clean_marker(&data_dir)?;
        info!("stopped cleanly");
        Ok(())
    } else {
        bail!("stopped, but not cleanly: the next start will run recovery")
    }
}

/// Reads `meta.properties` (Kafka's name for it), creating it with a new cluster id. A data
/// directory that belongs to another node or another cluster is refused: its metadata
/// quorum state (votes, terms) was written under that identity.
fn cluster_id(data_dir: &Path, config: &Config) -> anyhow::Result<String> {
    let path = data_dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string());
        if let Some(stored) = field("node.id=") {
            if stored != config.node_id.to_string() {
                bail!(
                    "{} holds node id {stored}, but this node is configured with node.id={}: \
                     if you moved the data, configure the node id it was written with",
                    path.display(),
                    config.node_id
                );
            }
        }
        if let Some(id) = field("cluster.id=") {
            if let Some(configured) = config.cluster_id.as_ref().filter(|c| **c != id) {
                bail!(
                    "{} belongs to cluster {id}, but this node is configured with cluster.id={configured}",
                    path.display()
                );
            }
            return Ok(id);
        }
    }
    let id = config.cluster_id.clone().unwrap_or_else(|| {
        let u = uuid::Uuid::new_v4();
        base64_url(u.as_bytes())
    });
    let text = format!("version=1\ncluster.id={id}\nnode.id={}\n", config.node_id);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    sync_dir(data_dir)?;
    Ok(id)
}

/// Kafka cluster ids are 16 random bytes in URL-safe base64 without padding.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Whether the last stop was clean; the marker is removed (durably) before any write.
fn take_clean_marker(data_dir: &Path) -> anyhow::Result<bool> {
    let marker = data_dir.join(CLEAN_SHUTDOWN_MARKER);
    if !marker.exists() {
        return Ok(false);
    }
    std::fs::remove_file(&marker).context("cannot remove the clean-shutdown marker")?;
    sync_dir(data_dir)?;
    Ok(true)
}

fn write_clean_marker(data_dir: &Path) -> anyhow::Result<()> {
    let marker = data_dir.join(CLEAN_SHUTDOWN_MARKER);
    std::fs::write(&marker, b"").context("cannot write the clean-shutdown marker")?;
    std::fs::File::open(&marker)?.sync_all()?;
    sync_dir(data_dir)
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot sync {}", dir.display()))
}

/// glommio's io_uring executors need a locked-memory limit of at least 512 KiB; without it
/// they fail inside their threads, so check first and say what to do.
fn check_locked_memory_limit() -> anyhow::Result<()> {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else { return Ok(()) };
    let Some(line) = limits.lines().find(|l| l.starts_with("Max locked memory")) else { return Ok(()) };
    let soft = line.split_whitespace().nth(3).unwrap_or("unlimited");
    if let Ok(bytes) = soft.parse::<u64>() {
        if bytes < LOCKED_MEMORY_MIN_BYTES {
            bail!(
                "the locked-memory limit is {} KiB; io_uring executors need at least {} KiB: run `ulimit -l 8192` (or set memlock in /etc/security/limits.conf) and start again",
                bytes / 1024,
                LOCKED_MEMORY_MIN_BYTES / 1024
            );
        }
    }
    Ok(())
}

/// Raises the soft descriptor limit to the hard one (as the JVM does for Kafka), then
/// shares it out before anything is opened (see `config::descriptors`).
fn plan_descriptors(config: &Config) -> weir::config::descriptors::DescriptorPlan {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                warn!(soft, hard, error = %e, "cannot raise the descriptor limit to its hard limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            warn!(error = %e, "cannot read the descriptor limit; assuming 1024");
            1024
        }
    };
    let open_now = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(16);
    let shards = config.data_shards();
    let listeners = shards + usize::from(config.controller_listen.is_some());
    let plan = weir::config::descriptors::DescriptorPlan::new(
        limit,
        open_now,
        shards,
        listeners,
        config.connections_max,
        config.open_files_max,
        config.broker_partitions_max,
    );
    info!(
        limit,
        reserved = plan.reserved,
        connections = plan.connections,
        open_segment_files = plan.open_files,
        max_broker_partitions = plan.broker_partitions,
        "file descriptors shared out"
    );
    if plan.connections < config.connections_max {
        info!(
            limit,
            max_connections = config.connections_max,
            accepted = plan.connections,
            "the descriptor limit (ulimit -n) holds fewer connections than max.connections: connections past it are refused"
        );
    }
    if plan.broker_partitions > plan.open_files {
        warn!(
            max_broker_partitions = plan.broker_partitions,
            open_segment_files = plan.open_files,
            "max.broker.partitions is above the open segment files the descriptor limit allows: partitions will evict each other's files"
        );
    }
    plan
}

/// Shards bind with SO_REUSEPORT, which would let a second broker silently share the port
/// with a running one. A plain bind cannot tell (connections left in TIME_WAIT by a crashed
/// broker make it fail), so ask whether anything accepts connections there. A broker killed
/// a moment ago still does for a short while: its io_uring instance, torn down by the kernel
/// after the process is gone, holds the listening sockets until then. So look again for a
/// few seconds before concluding another process holds the port.
fn refuse_taken_port(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut probe = listen;
    if probe.ip().is_unspecified() {
        probe.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        let Ok(stream) = std::net::TcpStream::connect_timeout(&probe, std::time::Duration::from_millis(500)) else {
            return Ok(());
        };
        // With no listener, a connect from an ephemeral port equal to the target port
        // "succeeds" by connecting to itself (TCP simultaneous open): the port is free.
        if stream.local_addr().ok() == stream.peer_addr().ok() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!("cannot listen on {listen}: Address already in use (another process accepts connections there)");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
