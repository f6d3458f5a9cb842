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
            .contains("Usage: flashsale [SETTINGS] [consume-orders | audit | openapi]")
    );
}

/// `flashsale --help` lists every setting of docs/settings.md, with the same default, and no
/// other: the page cannot drift from what the binary reads (`settings::` in the API tests
/// holds the binary's reads to the page).
#[test]
fn help_lists_every_setting_of_the_settings_page_with_its_default() {
    let output = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .arg("--help")
        .env("FLASHSALE_ADMIN_TOKEN", "never-shown")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(!help.contains("never-shown"), "a value in --help");
    // Each setting's help ends "[default: X] [env: VAR]" or "[env: VAR]".
    let mut listed = std::collections::BTreeMap::new();
    for line in help.lines() {
        let Some((before, var)) = line.trim_end().rsplit_once("[env: ") else {
            continue;
        };
        let var = var.trim_end_matches(']').to_owned();
        let default = before
            .trim_end()
            .strip_suffix(']')
            .and_then(|rest| rest.rsplit_once("[default: "))
            .map(|(_, default)| default.to_owned());
        listed.insert(var, default);
    }
    let mut documented = std::collections::BTreeMap::new();
    for row in include_str!("../docs/settings.md").lines() {
        let Some(row) = row.strip_prefix("| `FLASHSALE_") else {
            continue;
        };
        let row = format!("`FLASHSALE_{row}");
        let cells: Vec<&str> = row.split(" | ").collect();
        // `127.0.0.1:8080`, `0` (no limit): the value in backticks; unset …: none.
        let default = cells[1]
            .strip_prefix('`')
            .and_then(|rest| rest.split_once('`'))
            .map(|(value, _)| value.to_owned())
            .filter(|value| !value.is_empty());
        for var in cells[0]
            .split('`')
            .filter(|name| name.starts_with("FLASHSALE_"))
        {
            documented.insert(var.to_owned(), default.clone());
        }
    }
    assert!(
        documented.len() > 40,
        "the page's table read: {documented:?}"
    );
    assert_eq!(listed, documented, "--help against docs/settings.md");
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
