//! weir-loadgen against the real `weir` broker binary: short runs whose records must all be
//! consumed exactly once and in order, whose summary.json and .hlog files must parse, and
//! the ways a run ends early (Ctrl-C, a fatal broker error, no broker).
//!
//! The broker binary comes from `WEIR_BIN`, else `weir` in the target directory this test
//! was built in (its own profile, then release, then debug). Build it first:
//! `cargo build --release --bins --workspace`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use serde_json::Value;

fn broker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "WEIR_BIN={} is not a file", p.display());
        return p;
    }
    // <target>/<profile>/deps/<this test>
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let target = profile_dir.parent().expect("target dir");
    let candidates = [profile_dir.join("weir"), target.join("release/weir"), target.join("debug/weir")];
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "the weir broker binary is needed: set WEIR_BIN or build it (cargo build --release --bins --workspace); looked at {}",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

struct Broker {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(extra: &[&str]) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(broker_bin())
            .args(["serve", "--listen", &addr, "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--cores", "1", "--unpinned"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("weir is ready") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!("broker not ready in 30 s");
        }
        Broker { child, addr, _dir: dir }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keyed workload over several topics and partitions with mixed sizes, compression and
/// acks=all: the delivery check has something to find if anything goes wrong.
const WORKLOAD: &str = r#"
description = "integration test"
duration_s = 3
warmup_s = 1
[topics]
prefix = "lg-it"
count = 2
partitions = 3
[messages]
size = { min = 20, max = 300 }
keyed = true
key_count = 50
[producers]
count = 2
rate = 1500
acks = "all"
compression = "lz4"
linger_ms = 2
[consumers]
count = 2
fetch_max_wait_ms = 200
"#;

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    out: PathBuf,
}

fn loadgen(args: &[&str], out: &Path, limit: Duration, interrupt_after: Option<Duration>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir-loadgen"))
        .args(args)
        .arg("--out")
        .arg(out)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir-loadgen");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let start = Instant::now();
    let mut interrupted = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if let Some(after) = interrupt_after {
            if !interrupted && start.elapsed() >= after {
                interrupted = true;
                Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill -INT");
            }
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weir-loadgen did not finish in {limit:?}: {}", err_reader.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        out: out.to_path_buf(),
    }
}

/// Writes `text` as workload `name` in `dir` and runs it against `bootstrap`, with its results
/// in `dir/results-<name>`.
fn run_workload(
    dir: &Path,
    name: &str,
    text: &str,
    bootstrap: &str,
    limit: Duration,
    interrupt_after: Option<Duration>,
) -> Run {
    let wl = dir.join(format!("{name}.toml"));
    std::fs::write(&wl, text).expect("workload");
    let args = ["run", "--bootstrap", bootstrap, "--workload", wl.to_str().expect("utf-8"), "--unpinned"];
    loadgen(&args, &dir.join(format!("results-{name}")), limit, interrupt_after)
}

impl Run {
    /// The one results directory the run wrote.
    fn results_dir(&self) -> PathBuf {
        let dirs: Vec<PathBuf> =
            std::fs::read_dir(&self.out).expect("results dir").map(|e| e.expect("entry").path()).collect();
        assert_eq!(dirs.len(), 1, "one results directory: {dirs:?}");
        dirs.into_iter().next().expect("dir")
    }

    fn summary(&self) -> Value {
        let text = std::fs::read_to_string(self.results_dir().join("summary.json")).expect("summary.json");
        serde_json::from_str(&text).expect("summary.json is JSON")
    }

    fn context(&self) -> String {
        format!("status {:?}\n--- stdout\n{}\n--- stderr\n{}", self.status, self.stdout, self.stderr)
    }
}

fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    cur.as_f64().unwrap_or_else(|| panic!("{path} is not a number: {cur}"))
}

/// A run's delivery report says: at least `min` records produced, every one acknowledged and
/// consumed exactly once, in order, and nothing read that the run did not write.
fn assert_delivered_exactly_once(s: &Value, min: f64) {
    let d = &s["delivery"];
    let produced = num(d, "produced");
    assert!(produced >= min, "{d}");
    assert_eq!(num(d, "acknowledged"), produced, "everything acknowledged: {d}");
    assert_eq!(num(d, "consumed_unique"), produced, "{d}");
    assert_eq!(num(s, "counts.consumed"), produced, "no record consumed twice: {s}");
    for key in ["missing", "duplicates", "out_of_order", "foreign"] {
        assert_eq!(num(d, key), 0.0, "{key}: {d}");
    }
}

/// Counts (untagged, tagged) intervals of an interval log, decoding every histogram.
fn parse_hlog(path: &Path) -> (usize, usize, u64) {
    let text = std::fs::read(path).expect("hlog");
    let (mut untagged, mut tagged, mut samples) = (0, 0, 0);
    for entry in IntervalLogIterator::new(&text) {
        match entry.unwrap_or_else(|e| panic!("{}: {e:?}", path.display())) {
            LogEntry::Interval(i) => {
                assert!(!i.encoded_histogram().is_empty());
                if i.tag().is_some() {
                    assert_eq!(i.tag().map(|t| t.as_str().to_string()).as_deref(), Some("warmup"));
                    tagged += 1;
                } else {
                    untagged += 1;
                }
            }
            LogEntry::StartTime(_) | LogEntry::BaseTime(_) => {}
        }
    }
    let (h, n) = weir_loadgen::hlog::read_merged(path).expect("histograms decode");
    assert_eq!(n, untagged);
    samples += h.len();
    (untagged, tagged, samples)
}

#[test]
fn every_record_is_consumed_once_in_order_and_the_outputs_parse() {
    let broker = Broker::start(&[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = run_workload(tmp.path(), "it", WORKLOAD, &broker.addr, Duration::from_secs(60), None);
    assert!(run.status.success(), "{}", run.context());
    assert!(run.stdout.contains("Latency (ms)") && run.stdout.contains("p99.99"), "summary table: {}", run.context());
    assert!(run.stdout.contains("(warm-up)"), "progress lines: {}", run.context());

    let s = run.summary();
    // 1500 msg/s for 1 s warm-up + 3 s.
    assert_delivered_exactly_once(&s, 5000.0);
    assert_eq!(s["interrupted"], Value::Bool(false));
    assert!(s["fatalError"].is_null());

    let rate = num(&s, "throughput.publishMsgsPerSec");
    assert!((1200.0..1800.0).contains(&rate), "fixed rate kept: {rate}");
    assert_eq!(s["latencyUnit"], "microseconds");
    for key in ["publishLatencyUs", "endToEndLatencyUs"] {
        for p in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
            assert!(s[key][p].as_f64().is_some_and(|v| v > 0.0), "{key}.{p}: {}", s[key]);
        }
        assert!(num(&s[key], "p50") <= num(&s[key], "p99"));
    }
    for e in ["timeout", "disconnect"] {
        assert_eq!(num(&s["errors"], e), 0.0);
    }
    assert!(num(&s, "loadgenCpu.totalSeconds") > 0.0);
    assert!(num(&s, "loadgenCpu.percentOfRun") > 0.0);
    // The OpenMessaging Benchmark subset.
    let omb = &s["omb"];
    for key in [
        "aggregatedPublishLatency50pct",
        "aggregatedPublishLatency99pct",
        "aggregatedPublishLatencyMax",
        "aggregatedEndToEndLatency50pct",
        "aggregatedEndToEndLatency99pct",
        "aggregatedEndToEndLatencyMax",
    ] {
        assert!(num(omb, key) > 0.0, "omb.{key}");
    }
    assert_eq!(omb["publishRate"].as_array().map(Vec::len), Some(3), "one rate per measured second");
    assert_eq!(omb["consumeRate"].as_array().map(Vec::len), Some(3));

    // Interval logs: warm-up tagged, the rest decodes to what the summary counted.
    let dir = run.results_dir();
    let (untagged, tagged, samples) = parse_hlog(&dir.join("publish.hlog"));
    assert_eq!(tagged, 1, "one warm-up second");
    assert!(untagged >= 3, "three measured seconds and the drain");
    assert_eq!(samples as f64, num(&s, "publishLatencyUs.count"));
    let (_, _, e2e_samples) = parse_hlog(&dir.join("e2e.hlog"));
    assert_eq!(e2e_samples as f64, num(&s, "endToEndLatencyUs.count"));
    let workload = std::fs::read_to_string(dir.join("workload.toml")).expect("workload copy");
    assert!(workload.contains("prefix = \"lg-it\""), "{workload}");

    // compare reads it back.
    let html = tmp.path().join("c.html");
    let cmp = Command::new(env!("CARGO_BIN_EXE_weir-loadgen"))
        .arg("compare")
        .arg(&dir)
        .arg(&dir)
        .arg("--out")
        .arg(&html)
        .output()
        .expect("compare");
    assert!(cmp.status.success(), "{}", String::from_utf8_lossy(&cmp.stderr));
    assert!(String::from_utf8_lossy(&cmp.stdout).contains("x1.00"));
    let page = std::fs::read_to_string(&html).expect("html");
    assert_eq!(page.matches("<path class=\"run\"").count(), 4, "2 runs x (publish, e2e)");
}

/// Transactional producers (commits every 200 records or 50 ms) and read_committed
/// consumers: everything committed is read exactly once, in order.
const TRANSACTIONAL: &str = r#"
duration_s = 3
warmup_s = 1
[topics]
prefix = "lg-txn"
count = 2
partitions = 3
[messages]
size = 100
[producers]
count = 2
rate = 2000
acks = "all"
linger_ms = 2
transactions = { records = 200, interval_ms = 50 }
[consumers]
count = 2
fetch_max_wait_ms = 200
isolation = "read_committed"
"#;

#[test]
fn transactional_producers_and_read_committed_consumers_deliver_exactly_once() {
    let broker = Broker::start(&[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = run_workload(tmp.path(), "txn", TRANSACTIONAL, &broker.addr, Duration::from_secs(90), None);
    assert!(run.status.success(), "{}", run.context());
    assert!(
        run.stdout.contains("transactional (commit every 200 records / 50 ms) producers, read_committed consumers"),
        "{}",
        run.context()
    );
    let s = run.summary();
    // Every transaction committed: every record acknowledged.
    assert_delivered_exactly_once(&s, 6000.0);
    assert!(num(&s["publishLatencyUs"], "p50") > 0.0);
    // The producers' transactions went through the coordinator, one id each.
    let listed = Command::new(broker_bin())
        .args(["transactions", "list", "--bootstrap", &broker.addr])
        .output()
        .expect("weir transactions list");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(text.matches("weir-loadgen-").count(), 2, "{text}");
    assert_eq!(text.matches("CompleteCommit").count(), 2, "{text}");
}

/// 200 thinly loaded partitions (10 records per partition per second, `linger_ms = 5`): with
/// `drain = "expired"` each request carries the one or two batches that expired together;
/// with `drain = "all"` a request takes every open batch, as Kafka's Java producer does.
const THIN: &str = r#"
duration_s = 2
warmup_s = 1
[topics]
prefix = "lg-thin"
count = 1
partitions = 200
[messages]
size = 100
[producers]
count = 1
rate = 2000
acks = 1
linger_ms = 5
drain = "expired"
[consumers]
count = 1
fetch_max_wait_ms = 100
"#;

#[test]
fn draining_all_open_batches_packs_thin_partitions_into_fewer_requests() {
    let broker = Broker::start(&[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut per_request = Vec::new();
    for drain in ["expired", "all"] {
        let text = THIN.replace("drain = \"expired\"", &format!("drain = \"{drain}\""));
        let text = text.replace("lg-thin", &format!("lg-thin-{drain}"));
        let run =
            run_workload(tmp.path(), &format!("thin-{drain}"), &text, &broker.addr, Duration::from_secs(90), None);
        assert!(run.status.success(), "{}", run.context());
        let s = run.summary();
        assert_delivered_exactly_once(&s, 4000.0);
        let workload = std::fs::read_to_string(run.results_dir().join("workload.toml")).expect("workload copy");
        assert!(workload.contains(&format!("drain = \"{drain}\"")), "{workload}");
        per_request.push(num(&s, "counts.sent") / num(&s, "counts.produceRequests"));
    }
    eprintln!("records per request: expired {:.2}, all {:.2}", per_request[0], per_request[1]);
    // At 2,000 msg/s one record is due every 500 µs while a batch lingers 5 ms: draining
    // everything open puts about ten records in a request, expiry alone about one.
    assert!(per_request[0] < 2.5, "expired: {per_request:?} records per request");
    assert!(per_request[1] > 2.0 * per_request[0], "all: {per_request:?} records per request");
}

/// Output that cannot be written (`/dev/full`: what a full disk under a redirect gives) does
/// not end a run: it finishes with its own exit code and writes its results; a failed run
/// fails with 1, not a panic's 101.
#[test]
fn an_unwritable_stdout_and_stderr_do_not_end_the_run() {
    let broker = Broker::start(&[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let wl = tmp.path().join("it.toml");
    std::fs::write(&wl, WORKLOAD.replace("duration_s = 3", "duration_s = 2")).expect("workload");
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let run = |bootstrap: &str, out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_weir-loadgen"))
            .args(["run", "--bootstrap", bootstrap, "--workload", wl.to_str().expect("utf-8"), "--unpinned", "--out"])
            .arg(out)
            .env("RUST_LOG", "info")
            .stdout(full())
            .stderr(full())
            .status()
            .expect("run weir-loadgen")
    };
    let out = tmp.path().join("results");
    assert_eq!(run(&broker.addr, &out).code(), Some(0));
    let dirs: Vec<_> = std::fs::read_dir(&out).expect("results").collect();
    assert_eq!(dirs.len(), 1, "one results directory");
    let nobody = format!("127.0.0.1:{}", free_port());
    assert_eq!(run(&nobody, &tmp.path().join("none")).code(), Some(1));
}

#[test]
fn ctrl_c_stops_the_run_and_writes_the_results() {
    let broker = Broker::start(&[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = WORKLOAD.replace("duration_s = 3", "duration_s = 60");
    let run =
        run_workload(tmp.path(), "it", &text, &broker.addr, Duration::from_secs(40), Some(Duration::from_secs(3)));
    assert_eq!(run.status.code(), Some(130), "{}", run.context());
    let s = run.summary();
    assert_eq!(s["interrupted"], Value::Bool(true));
    let measured = num(&s, "measuredSeconds");
    assert!(measured > 0.5 && measured < 10.0, "stopped early: {measured}");
    let d = &s["delivery"];
    assert_eq!(num(d, "missing"), 0.0, "in-flight requests finished: {d}");
    assert_eq!(num(d, "duplicates") + num(d, "out_of_order"), 0.0, "{d}");
    assert!(num(d, "acknowledged") > 0.0);
    parse_hlog(&run.results_dir().join("publish.hlog"));
}

#[test]
fn a_fatal_broker_error_stops_the_run() {
    // Batches bigger than the broker takes: MESSAGE_TOO_LARGE cannot be retried away.
    let broker = Broker::start(&["--set", "message.max.bytes=1000"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = WORKLOAD.replace("size = { min = 20, max = 300 }", "size = 5000");
    let run = run_workload(tmp.path(), "big", &text, &broker.addr, Duration::from_secs(30), None);
    assert_eq!(run.status.code(), Some(1), "{}", run.context());
    assert!(run.stderr.contains("MESSAGE_TOO_LARGE"), "{}", run.context());
    let s = run.summary();
    assert!(s["fatalError"].as_str().is_some_and(|e| e.contains("MESSAGE_TOO_LARGE")), "{s}");
    assert!(num(&s["errors"], "MESSAGE_TOO_LARGE") >= 1.0);
}

#[test]
fn no_broker_is_a_quick_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let wl = tmp.path().join("it.toml");
    std::fs::write(&wl, WORKLOAD).expect("workload");
    let out = tmp.path().join("results");
    // Nothing listens on this port once the listener is dropped.
    let addr = format!("127.0.0.1:{}", free_port());
    let t = Instant::now();
    let run = loadgen(
        &["run", "--bootstrap", &addr, "--workload", wl.to_str().expect("utf-8"), "--unpinned"],
        &out,
        Duration::from_secs(30),
        None,
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.context());
    assert!(run.stderr.contains("cannot reach") && run.stderr.contains(&addr), "{}", run.context());
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(!out.exists() || std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0) == 0, "no results for no run");

    // A bad workload file names the field.
    std::fs::write(&wl, WORKLOAD.replace("acks = \"all\"", "acks = 3")).expect("workload");
    let run = loadgen(
        &["run", "--bootstrap", &addr, "--workload", wl.to_str().expect("utf-8"), "--unpinned"],
        &out,
        Duration::from_secs(30),
        None,
    );
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains("acks") && run.stderr.contains("it.toml"), "{}", run.context());
}
