//! Tidy checks that keep the tree as ARCHITECTURE.md describes it: every module says what it
//! is for, every crate is on the map, components depend only on what they may, and no test
//! is switched off.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn crates() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    v.sort();
    v
}

#[test]
fn every_module_has_a_doc_comment() {
    let mut files = Vec::new();
    for c in crates() {
        rust_files(&c.join("src"), &mut files);
        rust_files(&c.join("tests"), &mut files);
        rust_files(&c.join("benches"), &mut files);
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap_or_default()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` module doc: {missing:#?}"
    );
}

#[test]
fn architecture_md_names_every_crate() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    for c in crates() {
        let name = c
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        assert!(
            arch.contains(&format!("crates/{name}")),
            "ARCHITECTURE.md does not describe crates/{name}"
        );
    }
}

#[test]
fn components_depend_only_on_the_api() {
    for component in ["controllers", "agent", "proxy", "dns", "netpol"] {
        let Ok(manifest) =
            std::fs::read_to_string(root().join("crates").join(component).join("Cargo.toml"))
        else {
            continue;
        };
        for forbidden in ["berth-store", "berth-apiserver"] {
            assert!(
                !manifest.contains(forbidden),
                "crates/{component} must not depend on {forbidden}"
            );
        }
    }
}

#[test]
fn no_test_is_switched_off() {
    let mut files = Vec::new();
    for c in crates() {
        rust_files(&c, &mut files);
    }
    let marker = ["#[", "ignore]"].concat();
    let off: Vec<String> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .contains(&marker)
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(off.is_empty(), "ignored tests in {off:?}");
}
