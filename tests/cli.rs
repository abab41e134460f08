//! The `weir` command line: help, settings, refusing bad configs and a taken port.

mod common;

use std::process::Command;

use common::*;

fn weir(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).env("RUST_BACKTRACE", "0").output().expect("run weir")
}

/// Runs `weir ARGS --bootstrap ADDR`: (success, stdout, stderr).
fn weir_at(addr: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend(["--bootstrap", addr]);
    let out = weir(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn help_and_settings_document_everything() {
    let help = String::from_utf8(weir(&["serve", "--help"]).stdout).expect("utf8");
    for flag in ["--config", "--listen", "--data-dir", "--cores", "--unpinned", "--set", "weir settings"] {
        assert!(help.contains(flag), "serve --help mentions {flag}");
    }
    let settings = String::from_utf8(weir(&["settings"]).stdout).expect("utf8");
    for name in ["log.dirs", "num.partitions", "socket.request.max.bytes", "auto.create.topics.enable", "weir.cores"] {
        assert!(settings.contains(name), "weir settings lists {name}");
    }
}

#[test]
fn bad_settings_and_a_taken_port_fail_fast() {
    let out = weir(&["serve", "--set", "no.such.setting=1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting `no.such.setting`"));
    let out = weir(&["serve", "--set", "num.partitions=0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("num.partitions"));
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_string_lossy().to_string();
    let out = weir(&["serve", "--listen", &broker.addr(), "--data-dir", &data, "--cores", "1", "--unpinned"]);
    assert!(!out.status.success(), "a second broker must not share the port");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Address already in use"));
    // And a second broker on the same data directory is refused too.
    let other_port = free_port().to_string();
    let listen = format!("127.0.0.1:{other_port}");
    let out = weir(&["serve", "--listen", &listen, "--data-dir", &broker.data_dir().to_string_lossy(), "--unpinned"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another weir process"));
}

#[test]
fn groups_subcommand_lists_groups_and_shows_lag() {
    let broker = Broker::start_with(GROUPS_FAST);
    let mut c = broker.client();
    c.call(7, create_topics_request(&[("orders", 2, 1)], false));
    for _ in 0..5 {
        produce(&mut c, "orders", 0, batch(&[b"a", b"b"], 0, kafka_protocol::records::Compression::None), 1);
    }
    produce(&mut c, "orders", 1, batch(&[b"c"], 0, kafka_protocol::records::Compression::None), 1);
    let (member, generation) = stable_group(&mut c, "live");
    assert_eq!(commit(&mut c, 8, "live", &member, generation, "orders", &[(0, 4)]), vec![0]);
    assert_eq!(commit(&mut c, 8, "billing", "", -1, "orders", &[(0, 10), (1, 0)]), vec![0, 0]);

    let out = weir(&["groups", "--bootstrap", &broker.addr()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows, vec![vec!["billing", "Empty"], vec!["live", "Stable", "consumer"]], "{text}");

    let out = weir(&["groups", "--bootstrap", &broker.addr(), "billing", "live"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(lines.contains(&vec!["orders", "0", "10", "10", "0", "-", "-", "-"]), "{text}");
    assert!(lines.contains(&vec!["orders", "1", "0", "1", "1", "-", "-", "-"]), "{text}");
    // The live member's row: committed 4 of 10, lag 6 (its assignment is not a consumer-protocol one).
    assert!(lines.contains(&vec!["orders", "0", "4", "10", "6", "-", "-", "-"]), "{text}");
    assert!(text.contains("Group live (Stable, 1 member"), "{text}");

    let out = weir(&["groups", "--bootstrap", "127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot list groups at 127.0.0.1:1"));
}

#[test]
fn topics_and_records_subcommands_administer_and_fail_loudly() {
    let broker = Broker::start();
    let addr = broker.addr();
    let run = |args: &[&str]| weir_at(&addr, args);
    let (ok, out, err) = run(&["topics", "create", "cli-t", "--partitions", "2", "--config", "retention.ms=3600000"]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = run(&["topics", "list"]);
    assert!(ok && out.lines().any(|l| l == "cli-t"), "{out}");
    // Creating it again: Kafka's error, and a non-zero exit.
    let (ok, _, err) = run(&["topics", "create", "cli-t"]);
    assert!(!ok && err.contains("TopicAlreadyExists"), "{err}");
    let (ok, _, err) = run(&["topics", "create", "bad", "--config", "retention.ms"]);
    assert!(!ok && err.contains("expected KEY=VALUE"), "{err}");
    let (ok, _, err) = run(&["topics", "create", "bad", "--config", "retention.ms=-7"]);
    assert!(!ok && err.contains("InvalidConfig"), "{err}");
    // Grow it; shrinking is refused.
    let (ok, out, err) = run(&["topics", "add-partitions", "cli-t", "--partitions", "4"]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = run(&["topics", "describe", "cli-t"]);
    assert!(ok && out.contains("PartitionCount: 4"), "{out}");
    let (ok, _, err) = run(&["topics", "add-partitions", "cli-t", "--partitions", "2"]);
    assert!(!ok && err.contains("InvalidPartitions"), "{err}");
    // Records: delete the first two of partition 0.
    let mut c = broker.client();
    for _ in 0..3 {
        produce(&mut c, "cli-t", 0, batch(&[b"a"], 0, kafka_protocol::records::Compression::None), 1);
    }
    let (ok, out, err) = run(&["records", "delete", "cli-t", "--partition", "0", "--offset", "2"]);
    assert!(ok && out.contains("low watermark 2"), "{out}{err}");
    let (ok, _, err) = run(&["records", "delete", "cli-t", "--partition", "0", "--offset", "99"]);
    assert!(!ok && err.contains("OffsetOutOfRange"), "{err}");
    // Delete it; describing or deleting what is not there fails with a non-zero exit.
    let (ok, _, err) = run(&["topics", "delete", "cli-t"]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["topics", "list"]);
    assert!(ok && !out.contains("cli-t"), "{out}");
    let (ok, _, err) = run(&["topics", "describe", "cli-t"]);
    assert!(!ok && err.contains("cannot describe cli-t"), "{err}");
    let (ok, _, err) = run(&["topics", "delete", "cli-t"]);
    assert!(!ok && err.contains("UnknownTopicOrPartition"), "{err}");
    let (ok, out, err) = run(&["groups", "nosuch"]);
    assert!(!ok && out.contains("does not exist") && err.contains("no such group: nosuch"), "{out}{err}");
}

#[test]
fn configs_subcommand_describes_and_alters_topics_and_brokers() {
    let broker = Broker::start();
    let addr = broker.addr();
    let run = |args: &[&str]| weir_at(&addr, args);
    let (ok, _, err) = run(&["topics", "create", "cfg-t", "--config", "retention.ms=3600000"]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["configs", "describe", "--topic", "cfg-t"]);
    assert!(
        ok && out.contains("retention.ms") && out.contains("3600000") && out.contains("DYNAMIC_TOPIC_CONFIG"),
        "{out}{err}"
    );
    assert!(!out.contains("segment.bytes"), "defaults only with --all: {out}");
    let (ok, out, _) = run(&["configs", "describe", "--topic", "cfg-t", "--all"]);
    assert!(ok && out.contains("segment.bytes"), "{out}");
    // Set, append, delete; then the JSON view shows exactly that.
    let (ok, out, err) =
        run(&["topics", "alter", "cfg-t", "--set", "retention.bytes=1000000", "--append", "cleanup.policy=compact"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(&["configs", "alter", "--topic", "cfg-t", "--delete", "retention.ms"]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["configs", "describe", "--topic", "cfg-t", "--output", "json"]);
    assert!(ok, "{err}");
    let set: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"name\": \""))
        .map(|l| l.trim_end_matches("\",").to_string())
        .zip(
            out.lines()
                .filter_map(|l| l.trim().strip_prefix("\"value\": \""))
                .map(|v| v.trim_end_matches("\",").to_string()),
        )
        .collect();
    assert_eq!(
        set,
        vec![
            ("cleanup.policy".to_string(), "delete,compact".to_string()),
            ("retention.bytes".to_string(), "1000000".to_string())
        ],
        "{out}"
    );
    // Refusals exit non-zero with Kafka's error.
    let (ok, _, err) = run(&["configs", "alter", "--topic", "cfg-t", "--set", "retention.ms=soon"]);
    assert!(!ok && err.contains("InvalidConfig") && err.contains("retention.ms"), "{err}");
    let (ok, _, err) = run(&["configs", "alter", "--broker", "0", "--set", "num.partitions=3"]);
    assert!(!ok && err.contains("Cannot update these configs dynamically"), "{err}");
    let (ok, _, err) = run(&["configs", "describe", "--topic", "nosuch"]);
    assert!(!ok && err.contains("UnknownTopicOrPartition"), "{err}");
    let (ok, _, err) = run(&["configs", "alter", "--topic", "cfg-t"]);
    assert!(!ok && err.contains("nothing to change"), "{err}");
    // Broker settings: this broker's own and the cluster-wide defaults.
    let (ok, _, err) = run(&["configs", "alter", "--broker-defaults", "--set", "log.retention.ms=7200000"]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["configs", "describe", "--broker", "0"]);
    assert!(ok && out.contains("log.retention.ms") && out.contains("DYNAMIC_DEFAULT_BROKER_CONFIG"), "{out}");
    let (ok, out, _) = run(&["configs", "describe", "--broker-defaults"]);
    assert!(ok && out.contains("7200000"), "{out}");
    let (ok, out, _) =
        run(&["configs", "alter", "--broker", "0", "--set", "message.max.bytes=2000000", "--validate-only"]);
    assert!(ok && out.contains("nothing applied"), "{out}");
    let (ok, out, _) = run(&["configs", "describe", "--broker", "0"]);
    assert!(ok && !out.contains("message.max.bytes"), "validate-only changed nothing: {out}");
}
