//! Stopping at any moment of a start: SIGTERM while partitions recover, or right after the
//! broker first answers, is a clean stop (exit status 0, clean-shutdown marker written),
//! never the signal's default action.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, serve_command};

/// Starts a broker on `dir` and sends SIGTERM once `ready` says so; returns its exit status
/// and log.
fn stop_during_start(dir: &std::path::Path, ready: impl Fn(&str, u16) -> bool) -> (std::process::ExitStatus, String) {
    let port = free_port();
    let mut child = serve_command(&format!("127.0.0.1:{port}"), dir).spawn().expect("spawn weir");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the moment to stop never came; log:\n{log}");
        while let Ok(line) = rx.try_recv() {
            log.push_str(&line);
            log.push('\n');
        }
        if ready(&log, port) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let status = child.wait().expect("wait");
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        log.push_str(&line);
        log.push('\n');
    }
    (status, log)
}

#[test]
fn sigterm_right_after_the_first_answer_stops_cleanly() {
    // The old window (handlers installed after the listener) was hit in about 1 start of 6.
    for round in 0..20 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let (status, log) = stop_during_start(&dir, |_, port| TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(status.success(), "round {round}: exit {status:?}; log:\n{log}");
        assert!(dir.join(".weir_clean_shutdown").exists(), "round {round}: no clean marker; log:\n{log}");
    }
}

#[test]
fn sigterm_while_starting_stops_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let (status, log) = stop_during_start(&dir, |log, _| log.contains("starting"));
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    assert!(dir.join(".weir_clean_shutdown").exists(), "no clean marker; log:\n{log}");
}

#[test]
fn the_close_limit_is_a_setting_and_past_it_the_stop_is_unclean_but_safe() {
    use common::{create_topic, produce, Broker};
    let mut broker = Broker::start_with(&["--set", "weir.shutdown.close.timeout.ms=1"]);
    let mut c = broker.client();
    assert_eq!(create_topic(&mut c, "wide", 200).topics[0].error_code, 0);
    let batch = common::batch(&[b"kept"], 0, kafka_protocol::records::Compression::None);
    assert_eq!(produce(&mut c, "wide", 7, batch, -1).0, 0);
    drop(c);
    // 200 partitions cannot be synced and closed in 1 ms: the stop says so and is unclean.
    let status = broker.stop();
    assert!(!status.success(), "a stop past the close limit is not reported clean");
    assert!(!broker.data_dir().join(".weir_clean_shutdown").exists());
    assert!(broker.log_text().contains("weir.shutdown.close.timeout.ms"), "{}", broker.log_text());
    // The next start recovers; the acknowledged record is there.
    broker.restart();
    let mut c = broker.client();
    let records = common::fetch(&mut c, "wide", 7, 0, 0, 1 << 20);
    assert_eq!(common::records_of(&records.responses[0].partitions[0].records).len(), 1);
}

/// A broker whose log cannot be written (stderr on `/dev/full`, as on a full disk) goes on
/// serving: topics are created and written, connections answered, and a SIGTERM is a clean
/// stop. (The logging library's fallback for a failed write printed to the same stderr and
/// panicked, taking the logging shard down.)
#[test]
fn an_unwritable_log_does_not_stop_the_broker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let mut child = serve_command(&addr, &tmp.path().join("data")).stderr(full).spawn().expect("spawn weir");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every topic creation and write logs lines; all of them fail to be written.
    let mut client = common::Client::connect(&addr);
    for i in 0..5 {
        let name = format!("logless-{i}");
        common::create_topic(&mut client, &name, 2);
        let batch = common::batch(&[b"a", b"b"], 1_700_000_000_000, kafka_protocol::records::Compression::None);
        let resp = client.call(9, common::produce_request(&name, 0, batch, 1));
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0, "produce to {name}");
    }
    assert!(child.try_wait().expect("try_wait").is_none(), "still running");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let status = child.wait().expect("wait");
    assert!(status.success(), "clean stop: {status:?}");
}
