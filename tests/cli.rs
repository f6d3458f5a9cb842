//! The binary refuses bad configuration with one line naming the variable, and exit code 2.

use std::process::Command;

#[test]
fn an_unknown_subcommand_exits_2_with_usage() {
    let output = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .arg("serve-everything")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("usage: flashsale [consume-orders | audit | openapi]")
    );
}

#[test]
fn invalid_configuration_exits_2_naming_the_variable() {
    for (variable, value) in [
        ("FLASHSALE_BIND", "not-an-address"),
        ("FLASHSALE_DEFAULT_STOCK", "lots"),
        ("FLASHSALE_LOG_CONFIG", "/nonexistent/log4rs.yaml"),
        ("FLASHSALE_CONFIRM", "sometimes"),
        ("FLASHSALE_BUYER_RATE", "0"),
        // Tickets cannot be required without the key that checks them.
        ("FLASHSALE_REQUIRE_TICKET", "true"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_flashsale"))
            .env_remove("FLASHSALE_TICKET_KEY")
            .env(variable, value)
            .output()
            .expect("the binary runs");
        assert_eq!(output.status.code(), Some(2), "{variable}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(variable), "names {variable}: {stderr}");
    }
}

#[test]
fn openapi_prints_the_committed_document() {
    let output = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .arg("openapi")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(0));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let committed: serde_json::Value =
        serde_json::from_str(include_str!("../openapi.json")).expect("JSON");
    assert_eq!(printed, committed);
}
