//! Settings come from the environment under the names docs/settings.md documents: a renamed
//! variable, or one that page does not list, fails here rather than silently falling back to
//! its default (the other tests set `Settings` fields directly).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use flashsale::support::settings::{Confirm, RateLimit, Settings};
use secrecy::ExposeSecret;

use crate::helpers::process::env_of;
use crate::helpers::test_settings;

/// Names `Settings::from_lookup` asks for, and what it made of `env`.
fn read_back(env: &HashMap<&str, String>) -> (BTreeSet<String>, Settings) {
    let asked = RefCell::new(BTreeSet::new());
    let settings = Settings::from_lookup(|name| {
        asked.borrow_mut().insert(name.to_owned());
        env.get(name).cloned()
    })
    .expect("valid settings");
    (asked.into_inner(), settings)
}

/// The secret settings' values: the admin token, the storefront tokens, the ticket key and
/// the database URL.
fn secrets(settings: &Settings) -> Vec<Option<String>> {
    let exposed = |secret: Option<&secrecy::SecretString>| {
        secret.map(|secret| secret.expose_secret().to_owned())
    };
    let mut values = vec![
        exposed(settings.http.admin_token.as_ref()),
        exposed(settings.http.ticket_key.as_ref()),
        exposed(Some(&settings.consumer.database_url)),
    ];
    values.extend(settings.http.api_tokens.iter().map(|t| exposed(Some(t))));
    values
}

/// Every setting away from its default, so a variable read under another name shows.
fn every_setting_changed() -> Settings {
    let mut settings = test_settings();
    settings.http.bind = "127.0.0.1:4321".parse().expect("address");
    settings.redis.cluster = true;
    settings.nats.stream_replicas = 3;
    settings.http.api_tokens = vec!["front-1".into(), "front-2".into()];
    settings.http.ticket_key = Some("ticket-key".into());
    settings.http.require_ticket = true;
    settings.recovery.default_stock = 77;
    settings.recovery.archive_after = Duration::from_secs(7 * 86400);
    settings.redis.timeout = Duration::from_millis(1234);
    settings.redis.wait_replicas = 2;
    settings.redis.wait_timeout = Duration::from_millis(345);
    settings.redis.wait_connections = 5;
    settings.http.buyer_rate = Some(RateLimit {
        per_second: 3,
        burst: 5,
    });
    settings.http.client_rate = Some(RateLimit {
        per_second: 40,
        burst: 60,
    });
    settings.http.trusted_proxies = vec!["10.0.0.1".parse().expect("ip")];
    settings.redis.idempotency_ttl = Duration::from_secs(600);
    settings.http.workers = 3;
    settings.http.live_viewers = 77;
    settings.nats.stream_retention = flashsale::support::settings::Retention {
        max_age: Some(std::time::Duration::from_secs(86_400)),
        max_bytes: Some(1 << 30),
    };
    settings.nats.definitions_retention.max_age = Some(std::time::Duration::from_secs(3600));
    settings.http.live_max = std::time::Duration::from_secs(33);
    settings.http.live_refresh = Duration::from_millis(1500);
    settings.http.cors_origins = vec![
        "https://shop.example:8443".into(),
        "http://[::1]:8000".into(),
    ];
    settings.relay.claim_idle = Duration::from_millis(2500);
    settings.redis.sold_out_recheck = Duration::from_millis(250);
    settings.relay.drain_timeout = Duration::from_secs(4);
    settings.relay.hold = true;
    settings.telemetry.metrics = false;
    settings.consumer.database_url = "postgres://someone@db.example:5432/orders".into();
    settings.consumer.database_url_explicit = true;
    settings.consumer.name = "orders-test".into();
    settings.consumer.ack_wait = Duration::from_secs(45);
    settings.recovery.rebuild_timeout = Duration::from_millis(7000);
    settings.nats.confirm = Confirm::Redis;
    settings.nats.confirm_timeout = Duration::from_millis(800);
    settings.telemetry.log_config = "/etc/flashsale/log4rs.yaml".into();
    settings.telemetry.log_config_explicit = true;
    settings
}

#[test]
fn the_environment_carries_every_setting() {
    let settings = every_setting_changed();
    let env: HashMap<&str, String> = env_of(&settings, 4321).into_iter().collect();
    let (asked, parsed) = read_back(&env);
    assert_eq!(format!("{parsed:?}"), format!("{settings:?}"));
    // Debug shows no secret: those are compared by value.
    assert_eq!(secrets(&parsed), secrets(&settings));
    assert!(
        !format!("{parsed:?}").contains("ticket-key"),
        "a secret in Debug"
    );
    let unread: Vec<&&str> = env.keys().filter(|name| !asked.contains(**name)).collect();
    assert!(unread.is_empty(), "set but never read: {unread:?}");
    // And every one the binary reads is carried: a setting left at its default here would
    // pass the comparison above and still not reach a test's process.
    let uncarried: Vec<&String> = asked
        .iter()
        .filter(|name| !env.contains_key(name.as_str()))
        .collect();
    assert!(uncarried.is_empty(), "read but not carried: {uncarried:?}");
}

#[test]
fn every_variable_read_is_documented_and_every_documented_one_read() {
    let page = include_str!("../../docs/settings.md");
    // The first cell of each row of the settings table.
    let documented: BTreeSet<String> = page
        .lines()
        .filter_map(|line| line.strip_prefix("| `FLASHSALE_"))
        .flat_map(|row| {
            let cell = row.split(" | ").next().unwrap_or_default().to_owned();
            format!("`FLASHSALE_{cell}")
                .split('`')
                .filter(|name| name.starts_with("FLASHSALE_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let env = env_of(&every_setting_changed(), 4321).into_iter().collect();
    let (asked, _) = read_back(&env);
    assert_eq!(
        asked, documented,
        "read by the binary vs. the settings table of docs/settings.md"
    );
}
