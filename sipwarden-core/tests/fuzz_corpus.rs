//! Replays the fuzz corpus (`fuzz/corpus/*`) and the saved crash inputs
//! (`fuzz/regressions/*`) on the stable toolchain, through the same bodies
//! the fuzz targets run (`sipwarden_core::fuzzing`): what the fuzzer found
//! once must never come back, and every corpus input must keep the core's
//! invariants. A corpus directory that is missing or empty, or a missing
//! regressions directory, fails: a replay of nothing proves nothing.

use std::path::{Path, PathBuf};

fn dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Runs `f` on every file of `rel` (but `.gitkeep`); the count.
fn replay(rel: &str, f: fn(&[u8])) -> usize {
    let path = dir(rel);
    let entries = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    let mut n = 0;
    for e in entries {
        let p = e.expect("a readable directory entry").path();
        if p.file_name().is_some_and(|n| n == ".gitkeep") {
            continue;
        }
        let data =
            std::fs::read(&p).unwrap_or_else(|e| panic!("{} cannot be read: {e}", p.display()));
        f(&data);
        n += 1;
    }
    n
}

fn replay_target(target: &str, f: fn(&[u8])) {
    let corpus = replay(&format!("fuzz/corpus/{target}"), f);
    assert!(corpus > 0, "fuzz/corpus/{target} is empty");
    // Crash inputs, kept (with a line in fuzz/regressions/README.md) once
    // fixed; the directory exists even while it holds none.
    replay(&format!("fuzz/regressions/{target}"), f);
}

#[test]
fn scan_corpus_replays() {
    replay_target("scan", sipwarden_core::fuzzing::scan_bytes);
}

#[test]
fn core_corpus_replays() {
    replay_target("core", sipwarden_core::fuzzing::core_bytes);
}

#[test]
fn control_corpus_replays() {
    replay_target("control", sipwarden_core::fuzzing::control_bytes);
}

#[test]
fn cluster_corpus_replays() {
    replay_target("cluster", sipwarden_core::fuzzing::cluster_bytes);
}

#[test]
fn ws_upgrade_corpus_replays() {
    replay_target("ws_upgrade", sipwarden_core::fuzzing::ws_upgrade_bytes);
}
