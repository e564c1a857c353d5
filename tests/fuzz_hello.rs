//! Replays the ClientHello fuzz corpus (`fuzz/corpus/client_hello`) and
//! its saved crash inputs on the stable toolchain, through the body the
//! fuzz target runs (`sipwarden::fuzzing::client_hello_bytes`). An empty
//! corpus fails: a replay of nothing proves nothing.

use std::path::Path;

fn replay(rel: &str) -> (usize, usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let entries = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    let (mut n, mut hellos) = (0, 0);
    for e in entries {
        let p = e.expect("a readable directory entry").path();
        if p.file_name().is_some_and(|n| n == ".gitkeep") {
            continue;
        }
        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        sipwarden::fuzzing::client_hello_bytes(&data);
        hellos += usize::from(matches!(
            sipwarden::fuzzing::client_hello(&data),
            Some(Ok(_))
        ));
        n += 1;
    }
    (n, hellos)
}

#[test]
fn client_hello_corpus_replays() {
    let (n, hellos) = replay("fuzz/corpus/client_hello");
    assert!(n > 0, "fuzz/corpus/client_hello is empty");
    // The seeds include whole hellos (by name, by IP, with another name):
    // the gate itself ran, not only the reader's refusals.
    assert!(hellos >= 5, "{hellos} whole ClientHellos in {n} inputs");
    replay("fuzz/regressions/client_hello");
}

#[test]
fn the_readers_verdicts_on_real_hellos() {
    use sipwarden::fuzzing::client_hello;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/client_hello");
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        if let Some(Ok(sni)) = client_hello(&data) {
            names.push(sni);
        }
    }
    assert!(
        names.contains(&Some("pbx.secret.example".into())),
        "{names:?}"
    );
    assert!(names.contains(&Some("other.example".into())), "{names:?}");
    assert!(
        names.contains(&None),
        "a hello by IP has no name: {names:?}"
    );
    // A stream that is no TLS at all is refused, a partial hello waits.
    assert_eq!(
        client_hello(b"OPTIONS sip:x SIP/2.0\r\n\r\n"),
        Some(Err(()))
    );
    assert_eq!(client_hello(b"\x16\x03\x01"), None);
}
