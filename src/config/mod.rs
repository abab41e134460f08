//! Broker settings: Kafka's names where Kafka has the setting, `weir.*` where it does not.
//!
//! A TOML file gives the settings (dotted keys may be written quoted, `"log.dirs" = "data"`,
//! or as TOML tables); `weir serve` flags and `--set key=value` override them. Every limit
//! the broker enforces is a setting here, validated once at start.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use thiserror::Error;

pub mod definitions;
pub mod descriptors;

pub use definitions::{
    broker_config, topic_config, BrokerConfigDef, ConfigType, TopicConfigDef, Update, BROKER_CONFIGS, TOPIC_CONFIGS,
};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("unknown setting `{0}` (`weir settings` lists every setting)")]
    Unknown(String),
    #[error("setting `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

/// What a node does (`process.roles`): serve clients (broker), vote in the metadata quorum
/// (controller), or both (combined mode, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

/// One member of the controller quorum (`controller.quorum.voters`: `ID@HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

impl Voter {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// All broker settings, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `node.id`: this node's id, as a broker and as a controller.
    pub node_id: i32,
    /// `cluster.id`: reported in Metadata; generated and stored in the data dir when unset.
    pub cluster_id: Option<String>,
    /// `process.roles`.
    pub roles: Roles,
    /// `controller.quorum.voters`, in the order given. Empty: this node is a quorum of one
    /// (the single-node default) and needs no controller listener.
    pub voters: Vec<Voter>,
    /// `listeners`: the client listener, where every data shard binds (SO_REUSEPORT), e.g.
    /// `PLAINTEXT://127.0.0.1:9092`; its name is `client_listener_name`.
    pub listen: SocketAddr,
    pub client_listener_name: String,
    /// `listeners`, the entry named in `controller.listener.names`: where the control shard
    /// serves the quorum and broker-to-controller RPCs.
    pub controller_listen: Option<SocketAddr>,
    /// `controller.listener.names`.
    pub controller_listener_names: Vec<String>,
    /// `advertised.listeners`: host:port clients are told to connect to (defaults to `listen`).
    pub advertised: (String, u16),
    /// `broker.session.timeout.ms`: a broker with no heartbeat for this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`: how often a broker heartbeats to the active controller.
    pub broker_heartbeat_interval_ms: u64,
    /// `controller.quorum.election.timeout.ms`: a candidate's election timeout (randomised
    /// up to twice this), and how long a leader waits to hear from a majority before it
    /// steps down.
    pub quorum_election_timeout_ms: u64,
    /// `controller.quorum.fetch.timeout.ms`: a voter that hears nothing from the leader for
    /// this long starts an election.
    pub quorum_fetch_timeout_ms: u64,
    /// `controller.quorum.request.timeout.ms`: how long a broker waits for one controller RPC.
    pub quorum_request_timeout_ms: u64,
    /// `listeners` and `advertised.listeners` as given: resolved once every setting is read,
    /// since which entry is which depends on `controller.listener.names`.
    listeners_text: Option<String>,
    advertised_text: Option<String>,
    /// `log.dirs`: the data directory (one directory).
    pub data_dir: PathBuf,
    /// `num.partitions`: partitions of an auto-created topic or a CreateTopics with -1.
    pub num_partitions: i32,
    /// `default.replication.factor`: replicas of auto-created topics and of CreateTopics with -1.
    pub default_replication_factor: i16,
    /// `min.insync.replicas`: acks=all produce is refused while the ISR is smaller (a topic
    /// may set its own).
    pub min_insync_replicas: usize,
    /// `unclean.leader.election.enable`: a partition with no live in-sync replica may be led
    /// by an out-of-sync one (losing what only the others had).
    pub unclean_leader_election: bool,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// `replica.fetch.max.bytes`: bytes a follower asks for per partition.
    pub replica_fetch_max_bytes: usize,
    /// `replica.fetch.response.max.bytes`: bytes a follower asks for per fetch.
    pub replica_fetch_response_max_bytes: usize,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits for new records.
    pub replica_fetch_wait_max_ms: u64,
    /// `replica.fetch.backoff.ms`: pause after a failed follower fetch.
    pub replica_fetch_backoff_ms: u64,
    /// `num.replica.fetchers`: fetchers (connections) per leader a follower fetches from.
    pub num_replica_fetchers: usize,
    /// `offsets.topic.replication.factor`: replicas of `__consumer_offsets` (at most the
    /// brokers registered when it is created).
    pub offsets_replication_factor: i16,
    /// `auto.leader.rebalance.enable`: leadership goes back to preferred replicas.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`: how often the controller checks.
    pub leader_imbalance_check_interval_secs: u64,
    /// `leader.imbalance.per.broker.percentage`: the share of a broker's preferred
    /// partitions it may not lead before leadership is handed back.
    pub leader_imbalance_per_broker_percentage: u32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `log.segment.bytes`: roll the active segment when it reaches this size.
    pub segment_bytes: u64,
    /// `log.roll.ms` (or `log.roll.hours`): roll the active segment when it is this old.
    pub segment_ms: i64,
    /// `log.index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// `log.retention.ms`, `.minutes`, `.hours`: the first given of these wins, in that
    /// order (Kafka's precedence); see `log_retention_ms`.
    pub log_retention: LogRetention,
    /// `max.request.partition.size.limit`: most partitions one DescribeTopicPartitions
    /// answer carries (the client pages with a cursor).
    pub max_request_partition_size_limit: i32,
    /// `log.retention.bytes`: largest a partition's log grows before its oldest segments go (-1: no limit).
    pub log_retention_bytes: i64,
    /// `log.retention.check.interval.ms`: how often retention runs.
    pub log_retention_check_interval_ms: u64,
    /// `log.segment.delete.delay.ms` (topic: `file.delete.delay.ms`): how long a removed
    /// segment's files stay (as `*.deleted`) before they are unlinked.
    pub file_delete_delay_ms: u64,
    /// `log.flush.interval.ms`: the longest acks=0/1 data waits before it is synced.
    pub flush_interval_ms: u64,
    /// `weir.log.flush.interval.bytes`: written bytes of a partition that make its sync
    /// due before the periodic one.
    pub flush_interval_bytes: u64,
    /// `log.message.timestamp.type`: CreateTime or LogAppendTime.
    pub log_append_time: bool,
    /// `socket.request.max.bytes`: largest request frame accepted.
    pub request_bytes_max: usize,
    /// `message.max.bytes`: largest record batch accepted.
    pub batch_bytes_max: usize,
    /// `fetch.max.bytes`: cap on one Fetch response's record bytes.
    pub fetch_bytes_max: usize,
    /// `max.connections`: open client connections across all shards.
    pub connections_max: usize,
    /// `max.connections.per.ip`: open connections from one address (unlimited by default).
    pub connections_per_ip_max: usize,
    /// `max.connections.per.ip.overrides`: per-address limits (`host:count,...`, resolved once).
    pub connections_per_ip_overrides: HashMap<IpAddr, usize>,
    /// `connections.max.idle.ms`: a connection with nothing read or written for this long is closed.
    pub connection_idle_ms: u64,
    /// `weir.request.receive.timeout.ms`: once a request's first bytes arrived, the whole
    /// request must arrive within this, or the connection is closed (a stalled sender).
    pub request_receive_timeout_ms: u64,
    /// `weir.log.rate.limit.window.ms`: lines a client can repeat at will (bad frames, refused
    /// connections) are logged once per kind per window, then counted.
    pub log_rate_limit_window_ms: u64,
    /// `weir.shutdown.close.timeout.ms`: how long the data shards may take, together, to
    /// sync and close their logs at a stop; past it the stop is unclean (recovery runs next).
    pub close_timeout_ms: u64,
    /// `queued.max.requests`: requests one connection may have in flight (pipelined).
    pub inflight_requests_max: usize,
    /// `queued.max.request.bytes`: bytes the requests in flight may hold, broker-wide,
    /// split among the data shards (-1 = unbounded); see `server::request_memory`.
    pub queued_request_bytes_max: i64,
    /// `max.partitions` (weir): partitions across all topics.
    pub partitions_max: usize,
    /// `max.broker.partitions` (KIP-578): partition replicas one broker may hold (0 = as
    /// many as its segment-file caches can keep open: see `descriptors`).
    pub broker_partitions_max: usize,
    /// `weir.open.files.max`: segment files the data shards keep open together (0 = what the
    /// descriptor limit leaves).
    pub open_files_max: u64,
    /// How the descriptor limit is shared out: worked out by `main` at start from
    /// `RLIMIT_NOFILE`; unbounded in tests.
    pub descriptors: descriptors::DescriptorPlan,
    /// `producer.id.expiration.ms`: an idle idempotent producer's state is dropped after this.
    pub producer_id_expiration_ms: i64,
    /// `producer.id.expiration.check.interval.ms`: how often expiry runs.
    pub producer_id_expiration_check_interval_ms: u64,
    /// `log.cleaner.backoff.ms`: how often compacted topics are checked for sealed segments to clean.
    pub cleaner_backoff_ms: u64,
    /// `log.cleaner.delete.retention.ms`: how long a tombstone outlives compaction (topic: `delete.retention.ms`).
    pub delete_retention_ms: i64,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` (fixed once created).
    pub offsets_partitions: i32,
    /// `transaction.state.log.num.partitions`: partitions of `__transaction_state`.
    pub txn_partitions: i32,
    /// `transaction.state.log.replication.factor`: its replicas (at most the brokers registered).
    pub txn_replication_factor: i16,
    /// `transaction.state.log.segment.bytes`: its segment size (sealed segments are compacted).
    pub txn_segment_bytes: u64,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask for.
    pub txn_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: a transactional id idle (no transaction) this long is forgotten.
    pub txn_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often open
    /// transactions are checked against their timeout.
    pub txn_abort_check_interval_ms: u64,
    /// `weir.transaction.partitions.max`: partitions one transaction may span.
    pub txn_partitions_max: usize,
    /// `weir.transactional.ids.max`: transactional ids one coordinator shard keeps.
    pub txn_ids_max: usize,
    /// `offsets.topic.segment.bytes`: segment size of `__consumer_offsets` (small, so it compacts).
    pub offsets_segment_bytes: u64,
    /// `offsets.retention.minutes` (as ms): offsets of an empty group are dropped after this.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`: how often offset expiry runs.
    pub offsets_retention_check_interval_ms: u64,
    /// `offset.metadata.max.bytes`: longest metadata string a commit may carry.
    pub offset_metadata_max_bytes: usize,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members to join.
    pub group_initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub group_session_timeout_ms: (i32, i32),
    /// `group.max.size`: members one group may have.
    pub group_max_size: usize,
    /// `weir.cores`: data shards (0 = one per online CPU).
    pub cores: usize,
    /// `weir.cpu.list`: CPUs to pin data shards to, in order (empty = 0..cores).
    pub cpu_list: Vec<usize>,
    /// `weir.pin`: pin executors to CPUs (false for tests on small machines).
    pub pin: bool,
    /// `weir.io.memory.bytes`: io_uring registered buffer memory per executor (locked memory).
    pub io_memory_bytes: usize,
    /// `weir.tail.cache.bytes`: recent batches each partition keeps in memory for fetches.
    pub tail_cache_bytes: usize,
    /// `weir.fetch.waiters.max`: parked long-poll fetches per shard.
    pub fetch_waiters_max: usize,
    /// `max.incremental.fetch.session.cache.slots`: fetch sessions (KIP-227) the broker keeps.
    pub fetch_session_slots: usize,
    /// `weir.shard.channel.capacity`: messages queued between two shards.
    pub channel_capacity: usize,
    /// `metadata.log.max.record.bytes.between.snapshots`: metadata log bytes after which the
    /// controller snapshots the image and compacts the log.
    pub metadata_snapshot_bytes: u64,
    /// `weir.preallocate.budget.bytes`: the disk a broker's partitions reserve ahead of
    /// their writes at the start of a segment, shared among them (see `storage::log`).
    pub preallocate_budget_bytes: u64,
    /// `log.cleanup.policy`: the `cleanup.policy` of topics that set none.
    pub cleanup_policy: String,
    /// `log.cleaner.min.compaction.lag.ms` (topic: `min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
    /// `log.cleaner.max.compaction.lag.ms` (topic: `max.compaction.lag.ms`).
    pub max_compaction_lag_ms: i64,
    /// The settings as given (file, `--set`, flags), before any dynamic broker config:
    /// what DescribeConfigs reports as static, and what dynamic configs are applied over.
    pub static_settings: BTreeMap<String, String>,
}

/// Kafka's three broker settings for retention by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRetention {
    pub ms: Option<i64>,
    pub minutes: Option<i64>,
    pub hours: i64,
}

impl Default for LogRetention {
    fn default() -> Self {
        Self { ms: None, minutes: None, hours: 168 }
    }
}

impl Config {
    /// The broker's retention by time in ms (-1: forever): `log.retention.ms` if given, else
    /// `log.retention.minutes`, else `log.retention.hours`, as Kafka reads them.
    pub fn log_retention_ms(&self) -> i64 {
        let r = &self.log_retention;
        let ms = r.ms.or(r.minutes.map(|m| if m < 0 { -1 } else { m.saturating_mul(60_000) }));
        ms.unwrap_or(if r.hours < 0 { -1 } else { r.hours.saturating_mul(3_600_000) })
    }
}

impl Default for Config {
    fn default() -> Self {
        let listen: SocketAddr = ([127, 0, 0, 1], 9092).into();
        Self {
            node_id: 0,
            cluster_id: None,
            roles: Roles { broker: true, controller: true },
            voters: Vec::new(),
            listen,
            client_listener_name: "PLAINTEXT".to_string(),
            controller_listen: None,
            controller_listener_names: vec!["CONTROLLER".to_string()],
            advertised: ("127.0.0.1".to_string(), 9092),
            broker_session_timeout_ms: 9000,
            broker_heartbeat_interval_ms: 2000,
            quorum_election_timeout_ms: 1000,
            quorum_fetch_timeout_ms: 2000,
            quorum_request_timeout_ms: 2000,
            listeners_text: None,
            advertised_text: None,
            data_dir: PathBuf::from("data"),
            num_partitions: 1,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            unclean_leader_election: false,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_response_max_bytes: 10 << 20,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_backoff_ms: 1000,
            num_replica_fetchers: 1,
            offsets_replication_factor: 3,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_secs: 300,
            leader_imbalance_per_broker_percentage: 10,
            auto_create_topics: true,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            log_retention: LogRetention::default(),
            log_retention_bytes: -1,
            max_request_partition_size_limit: 2000,
            log_retention_check_interval_ms: 300_000,
            file_delete_delay_ms: 60_000,
            flush_interval_ms: 1000,
            flush_interval_bytes: 1024 * 1024,
            log_append_time: false,
            request_bytes_max: 100 * 1024 * 1024,
            batch_bytes_max: 1_048_588,
            fetch_bytes_max: 55 * 1024 * 1024,
            connections_max: 10_000,
            connections_per_ip_max: i32::MAX as usize,
            connections_per_ip_overrides: HashMap::new(),
            connection_idle_ms: 600_000,
            request_receive_timeout_ms: 30_000,
            log_rate_limit_window_ms: 10_000,
            close_timeout_ms: 120_000,
            inflight_requests_max: 64,
            queued_request_bytes_max: 256 << 20,
            partitions_max: 100_000,
            broker_partitions_max: 0,
            open_files_max: 0,
            descriptors: descriptors::DescriptorPlan::unbounded(),
            producer_id_expiration_ms: 86_400_000,
            producer_id_expiration_check_interval_ms: 600_000,
            cleaner_backoff_ms: 15_000,
            delete_retention_ms: 86_400_000,
            offsets_partitions: 50,
            txn_partitions: 50,
            txn_replication_factor: 3,
            txn_segment_bytes: 100 * 1024 * 1024,
            txn_max_timeout_ms: 900_000,
            txn_id_expiration_ms: 604_800_000,
            txn_abort_check_interval_ms: 10_000,
            txn_partitions_max: 10_000,
            txn_ids_max: 100_000,
            offsets_segment_bytes: 100 * 1024 * 1024,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            group_initial_rebalance_delay_ms: 3000,
            group_session_timeout_ms: (6000, 1_800_000),
            group_max_size: i32::MAX as usize,
            cores: 0,
            cpu_list: Vec::new(),
            pin: true,
            io_memory_bytes: 512 * 1024,
            tail_cache_bytes: 1024 * 1024,
            fetch_waiters_max: 10_000,
            fetch_session_slots: 1000,
            channel_capacity: 1024,
            metadata_snapshot_bytes: 20 << 20,
            preallocate_budget_bytes: 2 << 30,
            cleanup_policy: "delete".to_string(),
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            static_settings: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Reads a TOML file into flat `key -> value` settings.
    pub fn read_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let table: toml::Table =
            text.parse().map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source: Box::new(source) })?;
        let mut flat = BTreeMap::new();
        flatten("", &table, &mut flat);
        Ok(flat)
    }

    /// Builds a config from defaults plus flat settings (later entries win).
    pub fn from_settings<'a>(settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for (key, value) in settings {
            config.apply(key, value)?;
            config.static_settings.insert(key.to_string(), value.to_string());
        }
        config.resolve_listeners()?;
        config.validate()?;
        config.validate_cluster()?;
        Ok(config)
    }

    /// This config with dynamic broker configs over its static settings (the cluster
    /// defaults first, then this broker's own), validated as a whole.
    pub fn with_dynamic<'a>(
        &self,
        dynamic: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::from_settings(self.static_settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        for (key, value) in dynamic {
            config.apply(key, value)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// The most connections `ip` may hold open.
    pub fn connections_per_ip_limit(&self, ip: IpAddr) -> usize {
        self.connections_per_ip_overrides.get(&ip).copied().unwrap_or(self.connections_per_ip_max)
    }

    /// Whether any per-address limit is set (otherwise nothing is counted per address).
    pub fn limits_connections_per_ip(&self) -> bool {
        self.connections_per_ip_max < i32::MAX as usize || !self.connections_per_ip_overrides.is_empty()
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let v = value.trim();
        match key {
            "node.id" => self.node_id = parse(key, v)?,
            "cluster.id" => self.cluster_id = Some(v.to_string()),
            "process.roles" => self.roles = parse_roles(key, v)?,
            "controller.quorum.voters" => self.voters = parse_voters(key, v)?,
            "listeners" => self.listeners_text = Some(v.to_string()),
            "advertised.listeners" => self.advertised_text = Some(v.to_string()),
            "controller.listener.names" => {
                self.controller_listener_names =
                    v.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect()
            }
            "listener.security.protocol.map" => {
                for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                    match entry.split_once(':') {
                        Some((_, "PLAINTEXT")) => {}
                        Some((name, protocol)) => {
                            return Err(invalid(
                                key,
                                &format!("listener {name}: protocol {protocol} is not supported (only PLAINTEXT)"),
                            ))
                        }
                        None => return Err(invalid(key, "expected NAME:PROTOCOL entries")),
                    }
                }
            }
            "broker.session.timeout.ms" => self.broker_session_timeout_ms = parse(key, v)?,
            "broker.heartbeat.interval.ms" => self.broker_heartbeat_interval_ms = parse(key, v)?,
            "controller.quorum.election.timeout.ms" => self.quorum_election_timeout_ms = parse(key, v)?,
            "controller.quorum.fetch.timeout.ms" => self.quorum_fetch_timeout_ms = parse(key, v)?,
            "controller.quorum.request.timeout.ms" => self.quorum_request_timeout_ms = parse(key, v)?,
            "log.dirs" | "log.dir" => {
                if v.contains(',') {
                    return Err(invalid(key, "only one data directory is supported"));
                }
                self.data_dir = PathBuf::from(v);
            }
            "num.partitions" => self.num_partitions = parse(key, v)?,
            "default.replication.factor" => self.default_replication_factor = parse(key, v)?,
            "min.insync.replicas" => self.min_insync_replicas = parse(key, v)?,
            "unclean.leader.election.enable" => self.unclean_leader_election = parse(key, v)?,
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms = parse(key, v)?,
            "replica.fetch.max.bytes" => self.replica_fetch_max_bytes = parse(key, v)?,
            "replica.fetch.response.max.bytes" => self.replica_fetch_response_max_bytes = parse(key, v)?,
            "replica.fetch.wait.max.ms" => self.replica_fetch_wait_max_ms = parse(key, v)?,
            "replica.fetch.backoff.ms" => self.replica_fetch_backoff_ms = parse(key, v)?,
            "num.replica.fetchers" => self.num_replica_fetchers = parse(key, v)?,
            "offsets.topic.replication.factor" => self.offsets_replication_factor = parse(key, v)?,
            "auto.leader.rebalance.enable" => self.auto_leader_rebalance = parse(key, v)?,
            "leader.imbalance.check.interval.seconds" => self.leader_imbalance_check_interval_secs = parse(key, v)?,
            "leader.imbalance.per.broker.percentage" => self.leader_imbalance_per_broker_percentage = parse(key, v)?,
            "auto.create.topics.enable" => self.auto_create_topics = parse(key, v)?,
            "log.segment.bytes" => self.segment_bytes = parse(key, v)?,
            "log.roll.ms" => self.segment_ms = parse(key, v)?,
            "log.roll.hours" => self.segment_ms = parse::<i64>(key, v)? * 3600 * 1000,
            "log.index.interval.bytes" => self.index_interval_bytes = parse(key, v)?,
            "log.retention.ms" => self.log_retention.ms = Some(parse(key, v)?),
            "log.retention.minutes" => self.log_retention.minutes = Some(parse(key, v)?),
            "log.retention.hours" => self.log_retention.hours = parse(key, v)?,
            "log.retention.bytes" => self.log_retention_bytes = parse(key, v)?,
            "max.request.partition.size.limit" => self.max_request_partition_size_limit = parse(key, v)?,
            "log.retention.check.interval.ms" => self.log_retention_check_interval_ms = parse(key, v)?,
            "log.segment.delete.delay.ms" => self.file_delete_delay_ms = parse(key, v)?,
            "log.flush.interval.ms" => self.flush_interval_ms = parse(key, v)?,
            "weir.log.flush.interval.bytes" => self.flush_interval_bytes = parse(key, v)?,
            "log.message.timestamp.type" => {
                self.log_append_time = match v {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => return Err(invalid(key, "expected CreateTime or LogAppendTime")),
                }
            }
            "socket.request.max.bytes" => self.request_bytes_max = parse(key, v)?,
            "message.max.bytes" => self.batch_bytes_max = parse(key, v)?,
            "fetch.max.bytes" => self.fetch_bytes_max = parse(key, v)?,
            "max.connections" => self.connections_max = parse(key, v)?,
            "max.connections.per.ip" => self.connections_per_ip_max = parse(key, v)?,
            "max.connections.per.ip.overrides" => self.connections_per_ip_overrides = parse_ip_overrides(key, v)?,
            "connections.max.idle.ms" => self.connection_idle_ms = parse(key, v)?,
            "weir.request.receive.timeout.ms" => self.request_receive_timeout_ms = parse(key, v)?,
            "weir.log.rate.limit.window.ms" => self.log_rate_limit_window_ms = parse(key, v)?,
            "weir.shutdown.close.timeout.ms" => self.close_timeout_ms = parse(key, v)?,
            "queued.max.requests" => self.inflight_requests_max = parse(key, v)?,
            "queued.max.request.bytes" => self.queued_request_bytes_max = parse(key, v)?,
            "max.partitions" => self.partitions_max = parse(key, v)?,
            "max.broker.partitions" => self.broker_partitions_max = parse(key, v)?,
            "weir.open.files.max" => self.open_files_max = parse(key, v)?,
            "producer.id.expiration.ms" => self.producer_id_expiration_ms = parse(key, v)?,
            "transactional.id.expiration.ms" => self.txn_id_expiration_ms = parse(key, v)?,
            "transaction.state.log.num.partitions" => self.txn_partitions = parse(key, v)?,
            "transaction.state.log.replication.factor" => self.txn_replication_factor = parse(key, v)?,
            "transaction.state.log.segment.bytes" => self.txn_segment_bytes = parse(key, v)?,
            "transaction.max.timeout.ms" => self.txn_max_timeout_ms = parse(key, v)?,
            "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                self.txn_abort_check_interval_ms = parse(key, v)?
            }
            "weir.transaction.partitions.max" => self.txn_partitions_max = parse(key, v)?,
            "weir.transactional.ids.max" => self.txn_ids_max = parse(key, v)?,
            "producer.id.expiration.check.interval.ms" => {
                self.producer_id_expiration_check_interval_ms = parse(key, v)?
            }
            "log.cleaner.backoff.ms" => self.cleaner_backoff_ms = parse(key, v)?,
            "log.cleaner.delete.retention.ms" => self.delete_retention_ms = parse(key, v)?,
            "offsets.topic.num.partitions" => self.offsets_partitions = parse(key, v)?,
            "offsets.topic.segment.bytes" => self.offsets_segment_bytes = parse(key, v)?,
            "offsets.retention.minutes" => self.offsets_retention_ms = parse::<i64>(key, v)?.saturating_mul(60_000),
            "offsets.retention.check.interval.ms" => self.offsets_retention_check_interval_ms = parse(key, v)?,
            "offset.metadata.max.bytes" => self.offset_metadata_max_bytes = parse(key, v)?,
            "group.initial.rebalance.delay.ms" => self.group_initial_rebalance_delay_ms = parse(key, v)?,
            "group.min.session.timeout.ms" => self.group_session_timeout_ms.0 = parse(key, v)?,
            "group.max.session.timeout.ms" => self.group_session_timeout_ms.1 = parse(key, v)?,
            "group.max.size" => self.group_max_size = parse(key, v)?,
            "weir.cores" => self.cores = parse(key, v)?,
            "weir.cpu.list" => {
                self.cpu_list = v
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| parse(key, s.trim()))
                    .collect::<Result<_, _>>()?
            }
            "weir.pin" => self.pin = parse(key, v)?,
            "weir.io.memory.bytes" => self.io_memory_bytes = parse(key, v)?,
            "weir.tail.cache.bytes" => self.tail_cache_bytes = parse(key, v)?,
            "weir.fetch.waiters.max" => self.fetch_waiters_max = parse(key, v)?,
            "max.incremental.fetch.session.cache.slots" => self.fetch_session_slots = parse(key, v)?,
            "weir.shard.channel.capacity" => self.channel_capacity = parse(key, v)?,
            "metadata.log.max.record.bytes.between.snapshots" => self.metadata_snapshot_bytes = parse(key, v)?,
            "log.cleanup.policy" => {
                if !v.split(',').all(|p| matches!(p.trim(), "delete" | "compact")) {
                    return Err(invalid(key, "expected delete, compact or compact,delete"));
                }
                self.cleanup_policy = v.to_string();
            }
            "log.cleaner.min.compaction.lag.ms" => self.min_compaction_lag_ms = parse(key, v)?,
            "weir.preallocate.budget.bytes" => self.preallocate_budget_bytes = parse(key, v)?,
            "log.cleaner.max.compaction.lag.ms" => self.max_compaction_lag_ms = parse(key, v)?,
            _ => return Err(ConfigError::Unknown(key.to_string())),
        }
        Ok(())
    }

    /// Sorts `listeners` into the client listener and the controller listener, and picks
    /// the advertised client address.
    fn resolve_listeners(&mut self) -> Result<(), ConfigError> {
        let is_controller = |name: &str| self.controller_listener_names.iter().any(|c| c == name);
        let mut client = None;
        let mut controller = None;
        if let Some(text) = &self.listeners_text {
            for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let (name, addr) = entry.split_once("://").unwrap_or(("PLAINTEXT", entry));
                let addr = parse_listener("listeners", addr)?;
                let slot = if is_controller(name) { &mut controller } else { &mut client };
                if slot.is_some() {
                    return Err(invalid(
                        "listeners",
                        &format!(
                            "a second {name} listener: one client listener and one controller listener are supported"
                        ),
                    ));
                }
                *slot = Some((name.to_string(), addr));
            }
        }
        if let Some((name, addr)) = client {
            self.client_listener_name = name;
            self.listen = addr;
        } else if self.listeners_text.is_some() && self.roles.broker {
            return Err(invalid("listeners", "a broker needs a client listener, e.g. PLAINTEXT://127.0.0.1:9092"));
        }
        self.controller_listen = controller.map(|(_, addr)| addr);
        self.advertised = match &self.advertised_text {
            None => {
                let ip = self.listen.ip();
                let host = if ip.is_unspecified() { "127.0.0.1".to_string() } else { ip.to_string() };
                (host, self.listen.port())
            }
            Some(text) => {
                let key = "advertised.listeners";
                let mut chosen = None;
                for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                    let (name, addr) = entry.split_once("://").unwrap_or(("PLAINTEXT", entry));
                    if is_controller(name) {
                        continue;
                    }
                    if chosen.is_some() {
                        return Err(invalid(key, "only one client listener is supported"));
                    }
                    let (host, port) = addr.rsplit_once(':').ok_or_else(|| invalid(key, "expected HOST:PORT"))?;
                    chosen = Some((host.trim_matches(['[', ']']).to_string(), parse(key, port)?));
                }
                chosen.ok_or_else(|| invalid(key, "names no client listener"))?
            }
        };
        Ok(())
    }

    /// The rules Kafka applies to a node's place in the cluster (KRaft): who votes, who
    /// listens where.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let voters = "controller.quorum.voters";
        let mut ids: Vec<i32> = self.voters.iter().map(|v| v.node_id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(invalid(voters, "names a node id twice"));
        }
        let voting = self.voters.iter().find(|v| v.node_id == self.node_id);
        if self.voters.is_empty() {
            if !self.roles.controller {
                return Err(invalid(voters, "a broker-only node needs the quorum's voters"));
            }
            return Ok(());
        }
        if self.cluster_id.is_none() {
            return Err(invalid(
                "cluster.id",
                "a cluster needs the same cluster.id on every node (any string of letters, digits, - and _)",
            ));
        }
        if !self.roles.controller {
            if voting.is_some() {
                return Err(invalid(
                    "process.roles",
                    &format!(
                        "node.id={} is a voter in controller.quorum.voters but has no controller role",
                        self.node_id
                    ),
                ));
            }
            if self.controller_listen.is_some() {
                return Err(invalid("listeners", "a broker-only node must not have a controller listener"));
            }
            return Ok(());
        }
        let Some(voter) = voting else {
            return Err(invalid(
                voters,
                &format!("this node (node.id={}) has the controller role but is not among the voters", self.node_id),
            ));
        };
        let Some(listen) = self.controller_listen else {
            return Err(invalid(
                "listeners",
                &format!(
                    "a controller needs a listener named in controller.listener.names ({}), e.g. CONTROLLER://{}",
                    self.controller_listener_names.join(","),
                    voter.addr()
                ),
            ));
        };
        if listen.port() != voter.port {
            return Err(invalid(
                "listeners",
                &format!(
                    "this node is voter {}@{} but its controller listener is {listen}",
                    voter.node_id,
                    voter.addr()
                ),
            ));
        }
        if self.roles.broker && self.controller_listen == Some(self.listen) {
            return Err(invalid("listeners", "the client and controller listeners must differ"));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, key: &str, reason: &str| if ok { Ok(()) } else { Err(invalid(key, reason)) };
        check(self.num_partitions >= 1, "num.partitions", "must be at least 1")?;
        check(self.default_replication_factor >= 1, "default.replication.factor", "must be at least 1")?;
        check(self.min_insync_replicas >= 1, "min.insync.replicas", "must be at least 1")?;
        check(self.offsets_replication_factor >= 1, "offsets.topic.replication.factor", "must be at least 1")?;
        check(self.replica_lag_time_max_ms >= 1, "replica.lag.time.max.ms", "must be at least 1")?;
        check(
            self.leader_imbalance_check_interval_secs >= 1,
            "leader.imbalance.check.interval.seconds",
            "must be at least 1",
        )?;
        check(self.replica_fetch_max_bytes >= 1, "replica.fetch.max.bytes", "must be at least 1")?;
        check(self.num_replica_fetchers >= 1, "num.replica.fetchers", "must be at least 1")?;
        check(self.replica_fetch_response_max_bytes >= 1, "replica.fetch.response.max.bytes", "must be at least 1")?;
        check(self.segment_bytes >= 14 * 1024, "log.segment.bytes", "must be at least 14 KiB")?;
        check(
            self.segment_bytes <= i32::MAX as u64,
            "log.segment.bytes",
            "must fit in 31 bits (index positions are 32-bit)",
        )?;
        check(self.segment_ms >= 1, "log.roll.ms", "must be positive")?;
        check(self.index_interval_bytes >= 1, "log.index.interval.bytes", "must be positive")?;
        check(self.log_retention_ms() >= -1, "log.retention.ms", "must be -1 (forever) or at least 0")?;
        check(self.log_retention_bytes >= -1, "log.retention.bytes", "must be -1 (no limit) or at least 0")?;
        check(self.log_retention_check_interval_ms >= 1, "log.retention.check.interval.ms", "must be positive")?;
        check(self.max_request_partition_size_limit >= 1, "max.request.partition.size.limit", "must be positive")?;
        check(self.flush_interval_ms >= 1, "log.flush.interval.ms", "must be positive")?;
        check(self.flush_interval_bytes >= 1, "weir.log.flush.interval.bytes", "must be positive")?;
        check(self.request_bytes_max >= 1024, "socket.request.max.bytes", "must be at least 1024")?;
        check(self.batch_bytes_max >= 61, "message.max.bytes", "must hold at least a batch header (61 bytes)")?;
        check(
            self.batch_bytes_max <= self.request_bytes_max,
            "message.max.bytes",
            "must not exceed socket.request.max.bytes",
        )?;
        check(self.fetch_bytes_max >= 1, "fetch.max.bytes", "must be positive")?;
        check(self.connections_max >= 1, "max.connections", "must be positive")?;
        check(self.connection_idle_ms >= 1, "connections.max.idle.ms", "must be positive")?;
        check(self.request_receive_timeout_ms >= 1, "weir.request.receive.timeout.ms", "must be positive")?;
        check(self.log_rate_limit_window_ms >= 1, "weir.log.rate.limit.window.ms", "must be positive")?;
        check(self.close_timeout_ms >= 1, "weir.shutdown.close.timeout.ms", "must be positive")?;
        check(self.inflight_requests_max >= 1, "queued.max.requests", "must be positive")?;
        check(self.partitions_max >= 1, "max.partitions", "must be positive")?;
        check(
            self.queued_request_bytes_max == -1 || self.queued_request_bytes_max > 0,
            "queued.max.request.bytes",
            "must be positive, or -1 for no bound",
        )?;
        check(self.producer_id_expiration_ms >= 1, "producer.id.expiration.ms", "must be positive")?;
        check(
            self.producer_id_expiration_check_interval_ms >= 1,
            "producer.id.expiration.check.interval.ms",
            "must be positive",
        )?;
        check(self.cleaner_backoff_ms >= 1, "log.cleaner.backoff.ms", "must be positive")?;
        check(self.delete_retention_ms >= 0, "log.cleaner.delete.retention.ms", "must not be negative")?;
        check(self.min_compaction_lag_ms >= 0, "log.cleaner.min.compaction.lag.ms", "must not be negative")?;
        check(self.max_compaction_lag_ms >= 1, "log.cleaner.max.compaction.lag.ms", "must be positive")?;
        check(self.offsets_partitions >= 1, "offsets.topic.num.partitions", "must be at least 1")?;
        check(self.txn_partitions >= 1, "transaction.state.log.num.partitions", "must be at least 1")?;
        check(self.txn_replication_factor >= 1, "transaction.state.log.replication.factor", "must be at least 1")?;
        check(self.txn_max_timeout_ms >= 1, "transaction.max.timeout.ms", "must be at least 1")?;
        check(
            self.txn_abort_check_interval_ms >= 1,
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            "must be at least 1",
        )?;
        check(self.txn_partitions_max >= 1, "weir.transaction.partitions.max", "must be at least 1")?;
        check(self.txn_ids_max >= 1, "weir.transactional.ids.max", "must be at least 1")?;
        check(self.txn_segment_bytes >= 1024, "transaction.state.log.segment.bytes", "must be at least 1024")?;
        check(
            (14 * 1024..=i32::MAX as u64).contains(&self.offsets_segment_bytes),
            "offsets.topic.segment.bytes",
            "must be between 14 KiB and 2 GiB",
        )?;
        check(self.offsets_retention_ms >= 60_000, "offsets.retention.minutes", "must be at least 1")?;
        check(
            self.offsets_retention_check_interval_ms >= 1,
            "offsets.retention.check.interval.ms",
            "must be positive",
        )?;
        check(self.group_session_timeout_ms.0 >= 1, "group.min.session.timeout.ms", "must be positive")?;
        check(
            self.group_session_timeout_ms.1 >= self.group_session_timeout_ms.0,
            "group.max.session.timeout.ms",
            "must be at least group.min.session.timeout.ms",
        )?;
        check(self.group_max_size >= 1, "group.max.size", "must be positive")?;
        check(self.io_memory_bytes >= 64 * 1024, "weir.io.memory.bytes", "must be at least 64 KiB")?;
        check(self.channel_capacity >= 1, "weir.shard.channel.capacity", "must be positive")?;
        check(
            self.metadata_snapshot_bytes >= 1,
            "metadata.log.max.record.bytes.between.snapshots",
            "must be positive",
        )?;
        check(self.node_id >= 0, "node.id", "must not be negative")?;
        check(self.fetch_waiters_max >= 1, "weir.fetch.waiters.max", "must be positive")?;
        check(self.quorum_election_timeout_ms >= 10, "controller.quorum.election.timeout.ms", "must be at least 10")?;
        check(self.quorum_fetch_timeout_ms >= 10, "controller.quorum.fetch.timeout.ms", "must be at least 10")?;
        check(self.quorum_request_timeout_ms >= 1, "controller.quorum.request.timeout.ms", "must be positive")?;
        check(self.broker_heartbeat_interval_ms >= 1, "broker.heartbeat.interval.ms", "must be positive")?;
        check(
            self.broker_session_timeout_ms > self.broker_heartbeat_interval_ms,
            "broker.session.timeout.ms",
            "must be longer than broker.heartbeat.interval.ms",
        )?;
        Ok(())
    }

    /// One data shard's share of `queued.max.request.bytes`; `None` when unbounded.
    pub fn queued_request_bytes_per_shard(&self) -> Option<u64> {
        let total = u64::try_from(self.queued_request_bytes_max).ok()?;
        Some((total / self.data_shards().max(1) as u64).max(1))
    }

    /// This shard's share of `max.incremental.fetch.session.cache.slots` (sessions live on
    /// the shard of the connection that made them): at least one while any are allowed.
    pub fn fetch_session_slots_per_shard(&self) -> usize {
        match self.fetch_session_slots {
            0 => 0,
            n => n.div_ceil(self.data_shards().max(1)),
        }
    }

    /// Data shards to run: `weir.cores`, or one per online CPU.
    pub fn data_shards(&self) -> usize {
        if self.cores > 0 {
            self.cores
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            toml::Value::Array(items) => {
                let joined: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                out.insert(key, joined.join(","));
            }
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), reason: reason.to_string() }
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
    value.parse().map_err(|_| invalid(key, &format!("cannot parse `{value}`")))
}

fn parse_roles(key: &str, value: &str) -> Result<Roles, ConfigError> {
    let mut roles = Roles { broker: false, controller: false };
    for role in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        match role {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            other => return Err(invalid(key, &format!("unknown role `{other}` (broker, controller)"))),
        }
    }
    if !roles.broker && !roles.controller {
        return Err(invalid(key, "needs broker, controller or both"));
    }
    Ok(roles)
}

/// `ID@HOST:PORT,...`.
fn parse_voters(key: &str, value: &str) -> Result<Vec<Voter>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let bad = || invalid(key, &format!("`{entry}` is not ID@HOST:PORT"));
            let (id, addr) = entry.split_once('@').ok_or_else(bad)?;
            let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
            let node_id: i32 = id.trim().parse().map_err(|_| bad())?;
            if node_id < 0 {
                return Err(bad());
            }
            let host = host.trim_matches(['[', ']']);
            let host = if host == "localhost" { "127.0.0.1" } else { host };
            Ok(Voter { node_id, host: host.to_string(), port: port.parse().map_err(|_| bad())? })
        })
        .collect()
}

/// `host:count,...`: each host resolved now to its addresses (as Kafka resolves them).
fn parse_ip_overrides(key: &str, value: &str) -> Result<HashMap<IpAddr, usize>, ConfigError> {
    let mut out = HashMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, count) = entry.rsplit_once(':').ok_or_else(|| invalid(key, "expected HOST:COUNT entries"))?;
        let count: usize = parse(key, count.trim())?;
        let host = host.trim().trim_matches(['[', ']']);
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (host, 0)
                .to_socket_addrs()
                .map_err(|e| invalid(key, &format!("cannot resolve {host}: {e}")))?
                .map(|a| a.ip())
                .collect(),
        };
        for ip in addrs {
            out.insert(ip, count);
        }
    }
    Ok(out)
}

fn parse_listener(key: &str, addr: &str) -> Result<SocketAddr, ConfigError> {
    let addr = if addr.starts_with(':') { format!("0.0.0.0{addr}") } else { addr.to_string() };
    let addr = addr.replace("localhost", "127.0.0.1");
    parse(key, &addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_settings([("listeners", "PLAINTEXT://127.0.0.1:19092"), ("num.partitions", "6")])
            .expect("valid");
        assert_eq!(c.listen.port(), 19092);
        assert_eq!(c.advertised, ("127.0.0.1".to_string(), 19092));
        assert_eq!(c.num_partitions, 6);
        assert!(c.auto_create_topics);
    }

    #[test]
    fn rejects_unknown_and_bad_values() {
        assert!(matches!(Config::from_settings([("no.such", "1")]), Err(ConfigError::Unknown(_))));
        assert!(matches!(Config::from_settings([("num.partitions", "0")]), Err(ConfigError::Invalid { .. })));
        assert!(matches!(Config::from_settings([("log.dirs", "a,b")]), Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn every_listed_setting_is_understood() {
        for d in BROKER_CONFIGS {
            let result = Config::from_settings([(d.name, "1")]);
            assert!(!matches!(result, Err(ConfigError::Unknown(_))), "{} is listed but not applied", d.name);
        }
    }

    #[test]
    fn a_combined_node_of_a_three_voter_quorum() {
        let c = Config::from_settings([
            ("cluster.id", "test-cluster"),
            ("node.id", "2"),
            ("process.roles", "broker,controller"),
            ("controller.quorum.voters", "1@127.0.0.1:19093,2@localhost:29093,3@127.0.0.1:39093"),
            ("listeners", "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"),
            ("advertised.listeners", "PLAINTEXT://localhost:29092"),
        ])
        .expect("valid");
        assert_eq!(c.voters.len(), 3);
        assert_eq!(c.voters[1], Voter { node_id: 2, host: "127.0.0.1".into(), port: 29093 });
        assert_eq!(c.listen.port(), 29092);
        assert_eq!(c.controller_listen.map(|a| a.port()), Some(29093));
        assert_eq!(c.advertised, ("localhost".to_string(), 29092));
        // Settings arrive sorted from a file: the listener names may come after the listeners.
        let c = Config::from_settings([
            ("listeners", "CLIENT://127.0.0.1:1,QUORUM://127.0.0.1:2"),
            ("controller.listener.names", "QUORUM"),
            ("controller.quorum.voters", "0@127.0.0.1:2"),
            ("cluster.id", "c"),
        ])
        .expect("valid");
        assert_eq!((c.client_listener_name.as_str(), c.controller_listen.map(|a| a.port())), ("CLIENT", Some(2)));
    }

    #[test]
    fn refuses_a_node_at_odds_with_its_quorum() {
        let refused = |settings: &[(&str, &str)]| match Config::from_settings(settings.iter().copied()) {
            Err(ConfigError::Invalid { key, reason }) => format!("{key}: {reason}"),
            other => panic!("{settings:?} accepted: {other:?}"),
        };
        let voters = ("controller.quorum.voters", "1@127.0.0.1:19093,2@127.0.0.1:29093");
        let cluster = ("cluster.id", "c");
        let listeners = ("listeners", "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093");
        assert!(refused(&[("node.id", "1"), voters, listeners]).contains("same cluster.id"));
        assert!(refused(&[cluster, ("node.id", "5"), voters, listeners]).contains("not among the voters"));
        let no_controller_listener = ("listeners", "PLAINTEXT://127.0.0.1:19092");
        assert!(refused(&[cluster, ("node.id", "1"), voters, no_controller_listener]).contains("needs a listener"));
        let wrong_port = ("listeners", "PLAINTEXT://:1,CONTROLLER://127.0.0.1:19094");
        assert!(refused(&[cluster, ("node.id", "1"), voters, wrong_port]).contains("controller listener is"));
        let broker_only = ("process.roles", "broker");
        assert!(refused(&[cluster, ("node.id", "1"), broker_only, voters, listeners]).contains("no controller role"));
        assert!(refused(&[cluster, ("node.id", "3"), broker_only, voters, listeners])
            .contains("must not have a controller"));
        let client_only = ("listeners", "PLAINTEXT://127.0.0.1:39092");
        assert!(Config::from_settings([cluster, ("node.id", "3"), broker_only, voters, client_only]).is_ok());
        assert!(refused(&[("process.roles", "broker")]).contains("needs the quorum's voters"));
        assert!(refused(&[cluster, ("controller.quorum.voters", "1@h:1,1@h:2"), ("node.id", "1")]).contains("twice"));
        assert!(refused(&[("controller.quorum.voters", "x")]).contains("ID@HOST:PORT"));
        assert!(refused(&[("process.roles", "observer")]).contains("unknown role"));
        assert!(refused(&[("broker.session.timeout.ms", "100"), ("broker.heartbeat.interval.ms", "200")])
            .contains("longer than"));
    }

    #[test]
    fn toml_tables_flatten_to_kafka_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "\"log.dirs\" = \"d\"\n[log.segment]\nbytes = 20000\n").expect("write");
        let flat = Config::read_file(&path).expect("read");
        assert_eq!(flat.get("log.dirs").map(String::as_str), Some("d"));
        assert_eq!(flat.get("log.segment.bytes").map(String::as_str), Some("20000"));
    }
}
