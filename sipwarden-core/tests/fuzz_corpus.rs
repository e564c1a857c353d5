//! Replays the fuzz corpus (`fuzz/corpus/*`) and any saved crash inputs
//! (`fuzz/regressions/*`) on the stable toolchain: what the fuzzer found
//! once must never come back.

use std::path::Path;

fn replay(dir: &str, f: fn(&[u8])) -> usize {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let Ok(entries) = std::fs::read_dir(&path) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let data = std::fs::read(e.path()).expect("readable corpus file");
        f(&data);
        n += 1;
    }
    n
}

#[test]
fn scan_corpus_replays() {
    let n = replay("fuzz/corpus/scan", sipwarden_core::fuzzing::scan_bytes)
        + replay("fuzz/regressions/scan", sipwarden_core::fuzzing::scan_bytes);
    assert!(n > 0, "the scan corpus is empty");
}

#[test]
fn core_corpus_replays() {
    let n = replay("fuzz/corpus/core", sipwarden_core::fuzzing::core_bytes)
        + replay("fuzz/regressions/core", sipwarden_core::fuzzing::core_bytes);
    assert!(n > 0, "the core corpus is empty");
}
