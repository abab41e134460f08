//! The broker's layers, checked: no module of `src/` names (`crate::<module>`) a module of
//! a higher layer. Lower layers never import higher ones, so each can be tested,
//! benchmarked and reused without what sits above it.

use std::path::Path;

/// Bottom to top; modules on one line are one layer and may use each other.
const LAYERS: &[&[&str]] = &[
    &["types", "config"],
    &["protocol"],
    &["client"],
    &["storage"],
    &["partition"],
    &["cluster"],
    &["group", "txn"],
    &["shard"],
    &["replication"],
    &["controller"],
    &["server", "admin"],
    &["runtime"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or("");
        let module = top.trim_end_matches(".rs");
        let Some(own) = layer_of(module) else { continue };
        let text = std::fs::read_to_string(&file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let used: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if let Some(theirs) = layer_of(&used) {
                    if theirs > own {
                        violations.push(format!("{}:{}: {module} uses {used}", relative.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "lower layers import higher ones:\n{}", violations.join("\n"));
}

#[test]
fn every_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    for line in lib.lines() {
        if let Some(name) = line.strip_prefix("pub mod ").and_then(|l| l.strip_suffix(';')) {
            assert!(layer_of(name).is_some(), "module {name} is in no layer of tests/layering.rs");
        }
    }
}
