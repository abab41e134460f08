//! Test support: start the real `weir` binary on a free loopback port with a temporary data
//! directory, and speak the Kafka protocol to it with kafka-protocol's codecs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// `weir serve` on `addr` with data in `dir`, two unpinned shards, info logs on stderr (piped).
pub fn serve_command(addr: &str, dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .args(["serve", "--listen", addr, "--data-dir"])
        .arg(dir)
        .args(["--cores", "2", "--unpinned", "--log-level", "info"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    /// The controller listener's port, for a node of [`Broker::cluster`].
    pub controller_port: Option<u16>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    args: Vec<String>,
    log: Arc<Mutex<String>>,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts with extra `weir serve` arguments (e.g. `["--set", "num.partitions=3"]`).
    pub fn start_with(args: &[&str]) -> Broker {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut b = Broker {
            child: None,
            port: free_port(),
            controller_port: None,
            dir,
            _tmp: Some(tmp),
            args: args.iter().map(|s| s.to_string()).collect(),
            log: Arc::default(),
        };
        b.spawn();
        b
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Three (or `n`) combined-mode nodes of one cluster, node ids 1..=n, with short
    /// failover timings; returns once every node is ready.
    pub fn cluster(n: usize) -> Vec<Broker> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let voters: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1)).collect();
        let mut nodes: Vec<Broker> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, controller))| {
                let tmp = tempfile::tempdir().expect("tempdir");
                let settings = [
                    format!("node.id={}", i + 1),
                    "cluster.id=weir-rust-test".into(),
                    format!("controller.quorum.voters={}", voters.join(",")),
                    format!("listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"),
                    "broker.session.timeout.ms=2000".into(),
                    "broker.heartbeat.interval.ms=250".into(),
                    "controller.quorum.election.timeout.ms=500".into(),
                    "controller.quorum.fetch.timeout.ms=1000".into(),
                ];
                Broker {
                    child: None,
                    port: *port,
                    controller_port: Some(*controller),
                    dir: tmp.path().join("data"),
                    _tmp: Some(tmp),
                    args: settings.iter().flat_map(|s| ["--set".to_string(), s.clone()]).collect(),
                    log: Arc::default(),
                }
            })
            .collect();
        let ready: Vec<_> = nodes.iter_mut().map(Broker::launch).collect();
        for (node, ready) in nodes.iter().zip(ready) {
            node.wait_ready(ready);
        }
        nodes
    }

    fn spawn(&mut self) {
        let ready = self.launch();
        self.wait_ready(ready);
    }

    fn wait_ready(&self, ready: std::sync::mpsc::Receiver<()>) {
        if ready.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("broker not ready in 30 s; log:\n{}", self.log_text());
        }
    }

    /// Starts the process; the receiver hears when it is ready.
    fn launch(&mut self) -> std::sync::mpsc::Receiver<()> {
        let mut child = serve_command(&self.addr(), &self.dir).args(&self.args).spawn().expect("spawn weir");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("weir is ready") {
                    let _ = ready_tx.send(());
                }
                if let Ok(mut l) = log.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        self.child = Some(child);
        ready_rx
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The first log line that has every one of `parts`, waiting up to 10 s for it (the
    /// log arrives through a reader thread).
    pub fn log_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.log_text().lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            assert!(Instant::now() < deadline, "no log line with {parts:?}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        child.wait().expect("wait")
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("wait");
    }

    /// Starts again on the same port and data directory; returns how long start took.
    pub fn restart(&mut self) -> Duration {
        assert!(self.child.is_none(), "stop or kill first");
        let t = Instant::now();
        self.spawn();
        t.elapsed()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addr())
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- broker log ----\n{}", self.log_text());
        }
    }
}

pub struct Client {
    pub stream: TcpStream,
    next_correlation_id: i32,
    client_id: &'static str,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        Client::connect_as(addr, "weir-tests")
    }

    /// A connection whose requests carry `client_id`.
    pub fn connect_as(addr: &str, client_id: &'static str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client { stream, next_correlation_id: 1, client_id }
    }

    /// Encodes and sends a request; returns its correlation id.
    pub fn send<R: Request>(&mut self, version: i16, request: &R) -> i32 {
        let cid = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = cid;
        header.client_id = Some(StrBytes::from_static_str(self.client_id));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version)).expect("encode header");
        request.encode(&mut body, version).expect("encode request");
        self.send_frame(&body);
        cid
    }

    pub fn send_frame(&mut self, body: &[u8]) {
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).expect("write");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    pub fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    /// Reads one response and decodes it; asserts its correlation id.
    pub fn recv<R: Request>(&mut self, version: i16, cid: i32) -> R::Response {
        let mut frame = self.read_frame().expect("response frame");
        let api = ApiKey::try_from(R::KEY).expect("api key");
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).expect("response header");
        assert_eq!(header.correlation_id, cid, "responses come back in request order");
        R::Response::decode(&mut frame, version).expect("decode response")
    }

    pub fn call<R: Request>(&mut self, version: i16, request: R) -> R::Response {
        let cid = self.send(version, &request);
        self.recv::<R>(version, cid)
    }

    /// True when the broker has closed the connection (read sees EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = [0u8; 1];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

// ---- Request builders for the common cases ----

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    ProduceRequest, TopicName,
};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn create_topics_request(topics: &[(&str, i32, i16)], validate_only: bool) -> CreateTopicsRequest {
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 10_000;
    req.validate_only = validate_only;
    req.topics = topics
        .iter()
        .map(|(name, partitions, rf)| {
            let mut t = CreatableTopic::default();
            t.name = topic_name(name);
            t.num_partitions = *partitions;
            t.replication_factor = *rf;
            t
        })
        .collect();
    req
}

pub fn create_topic(client: &mut Client, name: &str, partitions: i32) -> CreateTopicsResponse {
    let resp = client.call(7, create_topics_request(&[(name, partitions, 1)], false));
    assert_eq!(resp.topics[0].error_code, 0, "create {name}: {:?}", resp.topics[0].error_message);
    resp
}

/// A client-encoded batch of `values`, with timestamps `ts0, ts0+1, ...` and keys `k<i>`.
pub fn batch(values: &[&[u8]], ts0: i64, compression: Compression) -> Bytes {
    idempotent_batch(values, ts0, compression, -1, -1, -1)
}

/// Like [`batch`], from an idempotent producer: id, epoch and the first record's sequence.
pub fn idempotent_batch(
    values: &[&[u8]],
    ts0: i64,
    compression: Compression,
    producer_id: i64,
    epoch: i16,
    first_seq: i32,
) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol keeps records in one batch while offset - sequence is constant.
            sequence: if producer_id < 0 { i as i32 - 1 } else { first_seq.wrapping_add(i as i32) },
            timestamp: ts0 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::copy_from_slice(v)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression })
        .expect("encode batch");
    buf.freeze()
}

pub fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = topic_name(topic);
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 10_000;
    req.topic_data = vec![t];
    req
}

/// Produces one batch; returns (error code, base offset).
pub fn produce(client: &mut Client, topic: &str, partition: i32, records: Bytes, acks: i16) -> (i16, i64) {
    let resp = client.call(9, produce_request(topic, partition, records, acks));
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32, max_bytes: i32) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = offset;
    p.partition_max_bytes = max_bytes;
    let mut t = FetchTopic::default();
    t.topic = topic_name(topic);
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.replica_id = (-1).into();
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = max_bytes;
    req.session_epoch = -1;
    req.topics = vec![t];
    req
}

pub fn fetch(
    client: &mut Client,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    max_bytes: i32,
) -> FetchResponse {
    client.call(12, fetch_request(topic, partition, offset, max_wait_ms, max_bytes))
}

/// Every record (offset, value) in a fetch response partition's record bytes.
pub fn records_of(bytes: &Option<Bytes>) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    let Some(b) = bytes else { return out };
    let mut b = b.clone();
    while b.len() >= 61 {
        let set = RecordBatchDecoder::decode(&mut b).expect("decode fetched batch");
        for r in set.records {
            out.push((r.offset, r.value.unwrap_or_default()));
        }
    }
    out
}

/// A new producer id and epoch from InitProducerId.
pub fn init_producer_id(client: &mut Client) -> (i64, i16) {
    let mut r = kafka_protocol::messages::InitProducerIdRequest::default();
    r.transactional_id = None;
    r.transaction_timeout_ms = 60_000;
    r.producer_id = (-1).into();
    r.producer_epoch = -1;
    let resp = client.call(4, r);
    assert_eq!(resp.error_code, 0);
    (resp.producer_id.0, resp.producer_epoch)
}

pub fn list_offset(client: &mut Client, topic: &str, partition: i32, timestamp: i64) -> (i16, i64, i64) {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = timestamp;
    let mut t = ListOffsetsTopic::default();
    t.name = topic_name(topic);
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = (-1).into();
    req.topics = vec![t];
    let resp: ListOffsetsResponse = client.call(7, req);
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset, p.timestamp)
}

// ---- Consumer groups ----

/// Broker flags for group tests: no initial rebalance delay, a small `__consumer_offsets`.
pub const GROUPS_FAST: &[&str] =
    &["--set", "group.initial.rebalance.delay.ms=0", "--set", "offsets.topic.num.partitions=8"];

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{GroupId, JoinGroupRequest, JoinGroupResponse, OffsetCommitRequest, SyncGroupRequest};
use kafka_protocol::ResponseError;

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub fn code(e: ResponseError) -> i16 {
    e.code()
}

pub fn join_request(group: &str, member: &str, instance: Option<&str>, session_ms: i32) -> JoinGroupRequest {
    let mut r = JoinGroupRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member);
    r.group_instance_id = instance.map(s);
    r.session_timeout_ms = session_ms;
    r.rebalance_timeout_ms = 10_000;
    r.protocol_type = s("consumer");
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    p.metadata = Bytes::from_static(b"subscription");
    r.protocols = vec![p];
    r
}

pub fn sync_request(group: &str, member: &str, generation: i32, assignments: &[(&str, &[u8])]) -> SyncGroupRequest {
    let mut r = SyncGroupRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member);
    r.generation_id = generation;
    r.assignments = assignments
        .iter()
        .map(|(m, a)| {
            let mut x = SyncGroupRequestAssignment::default();
            x.member_id = s(m);
            x.assignment = Bytes::copy_from_slice(a);
            x
        })
        .collect();
    r
}

/// Joins with the v4+ member-id round trip; returns the JoinGroup response.
pub fn join(c: &mut Client, group: &str, session_ms: i32) -> JoinGroupResponse {
    // As clients do: FindCoordinator first (it creates __consumer_offsets).
    let mut find = kafka_protocol::messages::FindCoordinatorRequest::default();
    find.key = s(group);
    assert_eq!(c.call(3, find).error_code, 0, "FindCoordinator");
    let first = c.call(7, join_request(group, "", None, session_ms));
    assert_eq!(first.error_code, code(ResponseError::MemberIdRequired));
    assert!(!first.member_id.is_empty());
    c.call(7, join_request(group, &first.member_id, None, session_ms))
}

/// A one-member Stable group; returns (member id, generation).
pub fn stable_group(c: &mut Client, group: &str) -> (String, i32) {
    let j = join(c, group, 10_000);
    assert_eq!(j.error_code, 0);
    let id = j.member_id.to_string();
    let sync = c.call(3, sync_request(group, &id, j.generation_id, &[(&id, b"assignment")]));
    assert_eq!(sync.error_code, 0);
    (id, j.generation_id)
}

/// Commits offsets of one topic; returns each partition's error code.
pub fn commit(
    c: &mut Client,
    version: i16,
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member);
    r.generation_id_or_member_epoch = generation;
    r.retention_time_ms = -1;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = topic_name(topic);
    t.partitions = offsets
        .iter()
        .map(|&(p, o)| {
            let mut x = OffsetCommitRequestPartition::default();
            x.partition_index = p;
            x.committed_offset = o;
            x.committed_metadata = Some(s("meta"));
            x
        })
        .collect();
    r.topics = vec![t];
    c.call(version, r).topics.into_iter().flat_map(|t| t.partitions.into_iter().map(|p| p.error_code)).collect()
}
