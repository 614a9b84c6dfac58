//! Replays every committed fuzz input (`fuzz/corpus/<target>/`, grown by `fuzz/run.sh`, and
//! any crash found and fixed, kept there as a regression) through the same checks as the fuzz
//! targets, on the stable toolchain: parsing never panics and what parses keeps its invariants.

use std::path::Path;

/// Runs `check` on every file of `fuzz/corpus/<target>`; returns how many there were.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| check(&bytes));
        assert!(result.is_ok(), "{} fails its check", path.display());
        n += 1;
    }
    n
}

#[test]
fn client_messages() {
    assert!(replay("client_message", streamhub::fuzzing::client_message) >= 4);
}

#[test]
fn events() {
    assert!(replay("event", streamhub::fuzzing::event) >= 3);
}

#[test]
fn frames() {
    assert!(replay("frames", streamhub::fuzzing::frames) >= 4);
}

#[test]
fn configs() {
    assert!(replay("config", streamhub::fuzzing::config) >= 2);
}
