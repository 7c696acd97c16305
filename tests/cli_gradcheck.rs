//! `deq gradcheck` runs every check and prints the memory-path rows of both language models.

use std::process::Command;

#[test]
fn gradcheck_passes_and_prints_the_memory_rows() {
    let out = Command::new(env!("CARGO_BIN_EXE_deq"))
        .arg("gradcheck")
        .output()
        .expect("run deq");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "deq gradcheck failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "implicit: DEQ-Transformer LM, memory 2",
        "unrolled: DEQ-Transformer LM, memory 2",
        "implicit: DEQ-TrellisNet LM, memory 1",
        "unrolled: DEQ-TrellisNet LM, memory 1",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?} in:\n{stdout}"));
        assert!(line.trim_end().ends_with("pass"), "{line}");
    }
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
