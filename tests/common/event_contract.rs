//! The event contract, `docs/asyncapi.json`, applied to what the tests read: every message
//! taken from a test's stream or seen on its subjects must be one the document describes
//! (`#[path]`-included, like `stream.rs`).

// Each test binary uses part of what is here.
#![allow(dead_code)]

use std::sync::OnceLock;

use serde_json::Value;

/// The document's schemas under `$defs`, its references made to point there.
fn schema_of(name: &str) -> Value {
    let document =
        include_str!("../../docs/asyncapi.json").replace("#/components/schemas/", "#/$defs/");
    let document: Value = serde_json::from_str(&document).expect("docs/asyncapi.json is JSON");
    serde_json::json!({
        "$ref": format!("#/$defs/{name}"),
        "$defs": document["components"]["schemas"],
    })
}

struct Contract {
    message: jsonschema::Validator,
    legacy: jsonschema::Validator,
    headers: jsonschema::Validator,
}

fn contract() -> &'static Contract {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    CONTRACT.get_or_init(|| {
        let validator = |name: &str| {
            jsonschema::validator_for(&schema_of(name))
                .unwrap_or_else(|e| panic!("schema {name} of docs/asyncapi.json: {e}"))
        };
        Contract {
            message: validator("OrderMessage"),
            legacy: validator("OrderEvent"),
            headers: validator("OrderHeaders"),
        }
    })
}

/// Panics unless a message on `subject` with `Nats-Msg-Id` `message_id` is one the document
/// describes: an OrderMessage (or, as versions before batches wrote, one OrderEvent alone),
/// every event of the subject's kind and sku.
pub fn assert_follows_contract(subject: &str, message_id: &str, payload: &[u8]) {
    let contract = contract();
    let headers = serde_json::json!({ "Nats-Msg-Id": message_id });
    if let Some(e) = contract.headers.iter_errors(&headers).next() {
        panic!("{subject}: headers against docs/asyncapi.json: {e} ({message_id})");
    }
    let value: Value = serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("{subject}: payload is not JSON: {e}"));
    let events: Vec<&Value> = if value.get("events").is_some() {
        if let Some(e) = contract.message.iter_errors(&value).next() {
            panic!(
                "{subject}: OrderMessage against docs/asyncapi.json: {e} at {}",
                e.instance_path()
            );
        }
        value["events"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    } else {
        if let Some(e) = contract.legacy.iter_errors(&value).next() {
            panic!(
                "{subject}: OrderEvent against docs/asyncapi.json: {e} at {}",
                e.instance_path()
            );
        }
        vec![&value]
    };
    // <prefix>.<kind>.<sku>: the channel's address.
    let mut parts = subject.splitn(3, '.');
    let (_, kind, sku) = (parts.next(), parts.next(), parts.next());
    for event in events {
        assert_eq!(
            event["event"]
                .as_str()
                .and_then(|e| e.strip_prefix("order.")),
            kind,
            "{subject}: an event of another kind"
        );
        assert_eq!(
            event["sku"].as_str(),
            sku,
            "{subject}: an event of another sale"
        );
    }
}
