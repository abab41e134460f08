//! The `weir` command line: help, settings, refusing bad configs and a taken port.

mod common;

use std::process::Command;

use common::*;

fn weir(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).env("RUST_BACKTRACE", "0").output().expect("run weir")
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
