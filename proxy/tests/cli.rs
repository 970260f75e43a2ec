//! The binary's own command-line surface (this test also makes cargo build
//! the `switchyard` binary that the end-to-end tests in `tests/` run).

use std::process::Command;

#[test]
fn usage_errors_exit_two_and_help_lists_the_commands() {
    let help = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for command in [
        "demo", "run", "check", "status", "switch", "rollback", "canary", "history", "reload",
    ] {
        assert!(text.contains(command), "--help lists {command}: {text}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("explode")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn check_of_a_missing_file_says_so_and_exits_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c", "/nonexistent/switchyard.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/switchyard.toml"));
}
