//! The waiting room: places in line, one per buyer, each given once; the early line shuffled
//! at the start; admission at the set rate on Redis's clock, through a pause, a resume and a
//! new rate; purchases only while admitted; tokens only for their buyer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use serde_json::{Value, json};

use flashsale::domain::queue::Queue;
use flashsale::domain::sale::format_time;

use crate::helpers::redis_fixtures::{LosableRedis, command_calls};
use crate::helpers::{TestApp, admin_post, error_of, spawn_app, unique, users};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A sale of `stock` with a queue admitting `rate` a second, each admission lasting
/// `admission_secs`, the sale open from `starts_at`.
fn queued_sale(stock: u64, starts_at: i64, rate: u64, admission_secs: u64) -> Value {
    json!({
        "stock": stock,
        "per_user_limit": 1,
        "starts_at": format_time(starts_at),
        "queue": {"admit_per_sec": rate, "opens_before_secs": 3600, "admission_secs": admission_secs},
    })
}

/// `user` joins the line: status and body.
async fn join(app: &TestApp, sku: &str, user: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/v1/sales/{sku}/queue")))
        .json(&json!({"user_id": user}))
        .send()
        .await
        .expect("join answered");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// A purchase of one unit with a queue token (or none).
async fn buy_with(app: &TestApp, sku: &str, user: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(&format!("/v1/sales/{sku}/orders")))
        .json(&json!({"user_id": user}));
    if let Some(token) = token {
        request = request.header("Queue-Token", token);
    }
    request.send().await.expect("purchase answered")
}

/// The sale's queue as Redis holds it: the schedule every decision is made by.
async fn queue_in_redis(app: &TestApp, sku: &str) -> Queue {
    let text = app
        .redis_hget(sku, "sale", "queue")
        .await
        .expect("the sale has a queue");
    Queue::decode(&text).expect("a queue field the service wrote")
}

/// `purchase.lua` called directly on the sale with its `queue` field set to `queue`: each
/// purchase's outcome (`created`, or its reply's words).
async fn purchase_on_queue(
    app: &TestApp,
    sku: &str,
    queue: String,
    batch: Vec<(&'static str, &'static str)>,
) -> Vec<String> {
    let mut redis = app.redis.clone();
    let _: () = redis::cmd("HSET")
        .arg(app.key(sku, "sale"))
        .arg("queue")
        .arg(queue)
        .query_async(&mut redis)
        .await
        .expect("HSET");
    let script = redis::Script::new(&crate::helpers::lua_source("purchase.lua"));
    let mut call = script.prepare_invoke();
    for name in ["sale", "orders", "buyers", "outbox", "deadlines"] {
        call.key(app.key(sku, name));
    }
    call.arg(600);
    for (user, listing) in &batch {
        call.arg(*user).arg(1).arg("").arg(*listing);
    }
    let (_, answered_at, answers): (Vec<redis::Value>, Vec<usize>, Vec<Vec<redis::Value>>) =
        call.invoke_async(&mut redis).await.expect("EVALSHA");
    let text = |v: &redis::Value| redis::from_redis_value_ref::<String>(v).unwrap_or_default();
    (0..batch.len())
        .map(|i| {
            answered_at
                .iter()
                .position(|&at| at == i + 1)
                .map_or("created".to_owned(), |k| {
                    answers[k].iter().map(text).collect::<Vec<_>>().join(" ")
                })
        })
        .collect()
}

/// An app on a Redis of the test's own (one server, whatever the topology of the pass).
async fn app_on(redis: &LosableRedis) -> TestApp {
    let mut settings = crate::helpers::test_settings();
    settings.redis.url = redis.url();
    settings.redis.cluster = false;
    crate::helpers::spawn_app_from(settings).await
}

/// Kendall's rank correlation of two orderings of the same items.
fn kendall_tau(pairs: &[(f64, f64)]) -> f64 {
    let (mut concordant, mut discordant) = (0i64, 0i64);
    for i in 0..pairs.len() {
        for j in i + 1..pairs.len() {
            let product = (pairs[i].0 - pairs[j].0) * (pairs[i].1 - pairs[j].1);
            if product > 0.0 {
                concordant += 1;
            } else if product < 0.0 {
                discordant += 1;
            }
        }
    }
    (concordant - discordant) as f64 / (concordant + discordant) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_joins_from_500_clients_get_places_1_to_10000_each_once() {
    let app = spawn_app().await;
    let sku = unique("queue-joins");
    app.create_sale(&sku, queued_sale(10, now_ms() - 1_000, 100, 60))
        .await;
    let buyers = users(&sku, 10_000);
    let answers: Vec<(String, u16, Value)> = futures::stream::iter(&buyers)
        .map(|user| {
            let (app, sku) = (&app, &sku);
            async move {
                let (status, body) = join(app, sku, user).await;
                (user.clone(), status, body)
            }
        })
        .buffer_unordered(500)
        .collect()
        .await;
    let mut place_of = HashMap::new();
    for (user, status, body) in &answers {
        assert_eq!(*status, 201, "{user}: {body}");
        let place = body["position"].as_u64().expect("a place");
        assert!(body["token"].as_str().is_some(), "{body}");
        assert!(place_of.insert(user.clone(), place).is_none());
    }
    let places: HashSet<u64> = place_of.values().copied().collect();
    assert_eq!(places.len(), 10_000, "no place given twice");
    assert_eq!(places, (1..=10_000).collect(), "places 1..10000");

    // A repeat join answers the same place, 200, however many come at once.
    let repeats: Vec<(String, u16, Value)> = futures::stream::iter(buyers.iter().step_by(20))
        .map(|user| {
            let (app, sku) = (&app, &sku);
            async move {
                let (status, body) = join(app, sku, user).await;
                (user.clone(), status, body)
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    for (user, status, body) in repeats {
        assert_eq!(status, 200, "{user}: {body}");
        assert_eq!(body["position"].as_u64(), Some(place_of[&user]), "{user}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_early_line_is_shuffled_at_the_start_not_kept_in_arrival_order() {
    let app = spawn_app().await;
    let sku = unique("queue-draw");
    // Far off while the buyers join; moved to a moment ahead once they have.
    app.create_sale(&sku, queued_sale(10, now_ms() + 3_600_000, 100, 60))
        .await;
    let buyers = users(&sku, 2_000);
    let arrived = AtomicUsize::new(0);
    let arrival: HashMap<String, usize> = futures::stream::iter(&buyers)
        .map(|user| {
            let (app, sku, arrived) = (&app, &sku, &arrived);
            async move {
                let (status, body) = join(app, sku, user).await;
                assert_eq!(status, 202, "{user} joined before the start: {body}");
                assert!(
                    body["position"].is_null() && body["token"].is_null(),
                    "{body}"
                );
                (user.clone(), arrived.fetch_add(1, Ordering::SeqCst))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // A second early join keeps the buyer's one entry.
    assert_eq!(join(&app, &sku, &buyers[0]).await.0, 202);

    let starts_at = now_ms() + 1_000;
    let response = app
        .put_sale(&sku, queued_sale(10, starts_at, 100, 60))
        .await;
    assert_eq!(response.status().as_u16(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(
        (starts_at - now_ms()).max(0) as u64 + 200,
    ))
    .await;
    let placed: Vec<(String, u64)> = futures::stream::iter(&buyers)
        .map(|user| {
            let (app, sku) = (&app, &sku);
            async move {
                let (status, body) = join(app, sku, user).await;
                assert_eq!(status, 200, "{user}: its drawn place: {body}");
                (user.clone(), body["position"].as_u64().expect("a place"))
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let places: HashSet<u64> = placed.iter().map(|(_, p)| *p).collect();
    assert_eq!(places, (1..=2_000).collect(), "places 1..2000, each once");
    let pairs: Vec<(f64, f64)> = placed
        .iter()
        .map(|(user, place)| (arrival[user] as f64, *place as f64))
        .collect();
    let tau = kendall_tau(&pairs);
    assert!(tau.abs() < 0.1, "places follow arrival: tau {tau}");
    // A buyer arriving after the start comes after every early one.
    let (status, late) = join(&app, &sku, &format!("{sku}-late")).await;
    assert_eq!(status, 201, "{late}");
    assert_eq!(late["position"], 2_001);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_outside_the_line_is_refused_with_its_reason() {
    let app = spawn_app().await;
    let sku = unique("queue-refusals");
    let starts_at = now_ms() + 7_200_000;
    app.create_sale(
        &sku,
        json!({"stock": 1, "starts_at": format_time(starts_at),
               "queue": {"admit_per_sec": 5, "opens_before_secs": 60, "admission_secs": 30}}),
    )
    .await;
    let response = app
        .client
        .post(app.url(&format!("/v1/sales/{sku}/queue")))
        .json(&json!({"user_id": "early-bird"}))
        .send()
        .await
        .expect("answered");
    let retry_after: u64 = response.headers()["Retry-After"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((7_000..=7_200).contains(&retry_after), "{retry_after}");
    assert_eq!(error_of(response).await, (409, "queue_not_open".into()));

    // A line that opens a week before its sale: the week is counted to the millisecond.
    let week = unique("queue-week");
    let week_secs = 7 * 86_400;
    app.create_sale(
        &week,
        json!({"stock": 1, "starts_at": format_time(now_ms() + (week_secs + 300) * 1000),
               "queue": {"admit_per_sec": 5, "opens_before_secs": week_secs, "admission_secs": 30}}),
    )
    .await;
    let (status, body) = join(&app, &week, "a-week-early").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("queue_not_open"))
    );

    let plain = unique("queue-none");
    app.create_sale(&plain, json!({"stock": 1})).await;
    let (status, body) = join(&app, &plain, "u").await;
    assert_eq!((status, body["error"].as_str()), (409, Some("no_queue")));
    let (status, body) = join(&app, &unique("queue-nosale"), "u").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("sale_not_found"))
    );

    // Ended early by the operator: no more joins.
    let ended = unique("queue-ended");
    app.create_sale(&ended, queued_sale(5, now_ms() - 1_000, 10, 30))
        .await;
    assert_eq!(join(&app, &ended, "before-the-end").await.0, 201);
    let end = admin_post(&app, &format!("/v1/sales/{ended}/end"), json!({})).await;
    assert_eq!(end.status().as_u16(), 200);
    let (status, body) = join(&app, &ended, "after-the-end").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("sale_not_open"))
    );

    // Sold out: everyone still in line stops waiting.
    let open = unique("queue-soldout");
    app.create_sale(&open, queued_sale(1, now_ms() - 1_000, 1_000, 30))
        .await;
    let (_, first) = join(&app, &open, "first").await;
    let (_, second) = join(&app, &open, "second").await;
    let token = first["token"].as_str().expect("token");
    assert_eq!(
        buy_with(&app, &open, "first", Some(token)).await.status(),
        201
    );
    let (status, body) = join(&app, &open, "second").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("sold_out")),
        "{second}"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_needs_the_buyers_own_token_and_an_admitted_place() {
    let app = spawn_app().await;
    let sku = unique("queue-tokens");
    // One place a second from half a second ago: Alice's place (1) is admitted in half a
    // second, Bob's (2) a second later.
    app.create_sale(&sku, queued_sale(5, now_ms() - 500, 1, 30))
        .await;
    let (_, alice) = join(&app, &sku, "alice").await;
    let (_, bob) = join(&app, &sku, "bob").await;
    let alice_token = alice["token"].as_str().expect("token").to_owned();
    let bob_token = bob["token"].as_str().expect("token").to_owned();
    let queue = queue_in_redis(&app, &sku).await;
    let sold_before = app.redis_sold(&sku).await;

    // No token, a forged one, someone else's: 401, nothing taken.
    let refused = |response| error_of(response);
    assert_eq!(
        refused(buy_with(&app, &sku, "alice", None).await).await,
        (401, "invalid_queue_token".into())
    );
    let forged = alice_token.replacen(".1.", ".0.", 1);
    assert_eq!(
        refused(buy_with(&app, &sku, "alice", Some(&forged)).await).await,
        (401, "invalid_queue_token".into())
    );
    assert_eq!(
        refused(buy_with(&app, &sku, "mallory", Some(&alice_token)).await).await,
        (401, "invalid_queue_token".into())
    );

    // Bob's place comes after Alice's: not admitted yet, with when to come back.
    let bob_place = bob["position"].as_u64().expect("place");
    let admit_at = queue.schedule.admit_time(bob_place).expect("admitting");
    if now_ms() < admit_at - 500 {
        let response = buy_with(&app, &sku, "bob", Some(&bob_token)).await;
        assert!(response.headers().contains_key("Retry-After"));
        assert_eq!(refused(response).await, (409, "not_admitted".into()));
    }
    assert_eq!(app.redis_sold(&sku).await, sold_before, "nothing taken");

    let alice_place = alice["position"].as_u64().expect("place");
    let alice_at = queue.schedule.admit_time(alice_place).expect("admitting");
    tokio::time::sleep(std::time::Duration::from_millis(
        (alice_at - now_ms()).max(0) as u64 + 50,
    ))
    .await;
    let response = buy_with(&app, &sku, "alice", Some(&alice_token)).await;
    assert_eq!(response.status().as_u16(), 201, "admitted: she buys");
    // Her order is on her list, as any buyer's is.
    let listed = crate::helpers::admin_get(&app, &format!("/v1/sales/{sku}/orders?user_id=alice"))
        .await
        .json::<Value>()
        .await
        .expect("orders");
    assert_eq!(
        listed["orders"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admission_follows_the_rate_on_redis_clock_through_a_pause_a_resume_and_a_new_rate() {
    let app = spawn_app().await;
    let sku = unique("queue-rate");
    let (rate, admission_secs) = (5, 2);
    let sale = queued_sale(1_000, now_ms(), rate, admission_secs);
    app.create_sale(&sku, sale.clone()).await;
    let buyers = users(&sku, 40);
    let mut tokens = Vec::new();
    for user in &buyers {
        let (status, body) = join(&app, &sku, user).await;
        assert_eq!(status, 201, "{body}");
        tokens.push((
            user.clone(),
            body["position"].as_u64().expect("place"),
            body["token"].as_str().expect("token").to_owned(),
        ));
    }

    // Each buyer tries 250 ms before its admission (refused) and just after it (bought),
    // the first ten at 5 a second.
    let check = |queue: Queue, from: usize, to: usize| {
        let (app, sku, tokens) = (&app, &sku, &tokens);
        async move {
            for (user, place, token) in &tokens[from..to] {
                let at = queue.schedule.admit_time(*place).expect("admitting");
                let early = at - 250 - now_ms();
                if early > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(early as u64)).await;
                    let response = buy_with(app, sku, user, Some(token)).await;
                    assert_eq!(
                        error_of(response).await,
                        (409, "not_admitted".into()),
                        "place {place} 250 ms before {at}"
                    );
                }
                let wait = (at + 20 - now_ms()).max(0) as u64;
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                let response = buy_with(app, sku, user, Some(token)).await;
                assert_eq!(
                    response.status().as_u16(),
                    201,
                    "place {place} admitted at {at}"
                );
            }
        }
    };
    check(queue_in_redis(&app, &sku).await, 0, 10).await;

    // Paused: nobody more is admitted, with no time to give.
    let paused = admin_post(&app, &format!("/v1/sales/{sku}/queue/pause"), json!({})).await;
    assert_eq!(paused.status().as_u16(), 200);
    let paused: Value = paused.json().await.expect("sale");
    assert_eq!(paused["queue"]["paused"], true);
    let held = queue_in_redis(&app, &sku).await;
    let admitted = held.schedule.admitted(now_ms());
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    assert_eq!(app.sale_json(&sku).await["queue"]["admitted"], admitted);
    let (user, place, token) = &tokens[(admitted as usize).max(10) + 1];
    let response = buy_with(&app, &sku, user, Some(token)).await;
    assert_eq!(
        error_of(response).await,
        (409, "not_admitted".into()),
        "place {place} while paused at {admitted}"
    );

    // Resumed: on from where it stood, at the rate.
    let resumed = admin_post(&app, &format!("/v1/sales/{sku}/queue/resume"), json!({})).await;
    assert_eq!(resumed.status().as_u16(), 200);
    let queue = queue_in_redis(&app, &sku).await;
    let resumed_at = queue.schedule.segments().last().expect("segment").since;
    assert_eq!(queue.schedule.admitted(resumed_at), admitted);
    let from = (admitted as usize).max(10);
    check(queue, from, from + 5).await;

    // A new rate: 20 a second from the PUT on.
    let mut faster = sale.clone();
    faster["queue"]["admit_per_sec"] = json!(20);
    let response = app.put_sale(&sku, faster).await;
    assert_eq!(response.status().as_u16(), 200);
    let queue = queue_in_redis(&app, &sku).await;
    assert_eq!(queue.schedule.rate(), 20);
    assert_eq!(queue.schedule.segments().len(), 4, "{queue:?}");
    let from = from + 5;
    check(queue.clone(), from, from + 10).await;

    // Lapsed: a buyer admitted over 2 s ago buys nothing.
    let (user, place, token) = &tokens[from + 12];
    let lapse = queue.schedule.admit_time(*place).expect("admitting") + 2_000;
    tokio::time::sleep(std::time::Duration::from_millis(
        (lapse - now_ms()).max(0) as u64 + 50,
    ))
    .await;
    let response = buy_with(&app, &sku, user, Some(token)).await;
    assert_eq!(error_of(response).await, (409, "admission_expired".into()));
    // The stock counts exactly the purchases made inside their admissions.
    assert_eq!(app.redis_sold(&sku).await, 25);
    app.cleanup().await;
}

/// The purchase script decides admission by itself, on Redis's clock: what the replicas' gate
/// lets through (a place within 100 ms of its admission, a lapsed one, a copy a second old)
/// is decided there, so its rule is held here without the gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purchase_script_admits_by_the_schedule_on_its_own() {
    let app = spawn_app().await;
    let sku = unique("queue-script");
    app.create_sale(&sku, queued_sale(10, now_ms() - 1_000, 1, 3))
        .await;
    let (secs, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut app.redis.clone())
        .await
        .expect("TIME");
    let redis_now = secs * 1000 + micros / 1000;
    // One place a second since 10 s ago, each admitted for 3 s: place 5 lapsed 2 s ago,
    // place 9 was admitted a second ago, place 11 comes in a second.
    let start = redis_now - 10_000;
    // Each admission lasts 3 s.
    let purchase = |schedule: String, batch: Vec<(&'static str, &'static str)>| {
        purchase_on_queue(&app, &sku, format!("1;3600;3;{schedule}"), batch)
    };
    let outcomes = purchase(
        format!("{start}:1"),
        vec![
            ("no-token", "1"),
            ("lapsed", "1@5"),
            ("admitted", "1@9"),
            ("early", "1@11"),
            ("unlisted-admitted", "0@8"),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        [
            "queue_token_required".to_owned(),
            "admission_expired".to_owned(),
            "created".to_owned(),
            format!("not_admitted {}", start + 11_000),
            "created".to_owned(),
        ]
    );
    // Paused 5 s ago, exactly when place 5 was admitted: it was admitted (and has lapsed
    // since), place 6 has no time.
    assert_eq!(
        purchase(
            format!("{start}:1,{}:0", start + 5_000),
            vec![("at-the-pause", "1@5"), ("after-the-pause", "1@6")]
        )
        .await,
        ["admission_expired".to_owned(), "not_admitted ".to_owned()]
    );
    // A day's admission is counted to the millisecond: admitted a day and 10 s ago, lapsed.
    let day_ago = redis_now - 86_410_000;
    assert_eq!(
        purchase_on_queue(
            &app,
            &sku,
            format!("1;3600;86400;{}:1", day_ago - 1_000),
            vec![("a-day-late", "1@1")]
        )
        .await,
        ["admission_expired".to_owned()]
    );
    // Paused half a second ago: place 11 has no time, place 9 still buys in its window.
    let outcomes = purchase(
        format!("{start}:1,{}:0", redis_now - 500),
        vec![("early-2", "1@11"), ("admitted-2", "1@9")],
    )
    .await;
    assert_eq!(outcomes, ["not_admitted ".to_owned(), "created".to_owned()]);
    assert_eq!(app.redis_sold(&sku).await, 3);
    app.cleanup().await;
}

/// A stampede of buyers whose places are not admitted yet costs Redis nothing: the replica's
/// gate turns them away from its copy of the schedule (read once a second at most), with
/// the same answer the script would give. Counted on a Redis of the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_buyers_are_turned_away_without_a_script_call() {
    let redis = LosableRedis::start().await;
    let app = app_on(&redis).await;
    let sku = unique("queue-gate");
    // One place a second from the start: place 1 comes in a second, the others later.
    app.create_sale(&sku, queued_sale(10, now_ms(), 1, 60))
        .await;
    let buyers = users(&sku, 50);
    let mut tokens = Vec::new();
    for user in &buyers {
        let (_, body) = join(&app, &sku, user).await;
        tokens.push((
            user.clone(),
            body["token"].as_str().expect("token").to_owned(),
        ));
    }
    let mut counted = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connected");
    let count = |calls: &HashMap<String, u64>, name: &str| calls.get(name).copied().unwrap_or(0);
    let before = command_calls(&mut counted).await;
    // Forty early purchases at once, right after the joins (the replica's copy of the
    // schedule is fresh), then forty more once it is over a second old: the first of those
    // reads it again, the others go on with the old copy meanwhile.
    async fn early(app: &TestApp, sku: &str, tokens: &[(String, String)]) -> Vec<(u16, String)> {
        futures::stream::iter(tokens)
            .map(|(user, token)| async move {
                error_of(buy_with(app, sku, user, Some(token)).await).await
            })
            .buffer_unordered(20)
            .collect()
            .await
    }
    let mut answers = early(&app, &sku, &tokens[10..]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    answers.extend(early(&app, &sku, &tokens[10..]).await);
    assert!(
        answers
            .iter()
            .all(|a| *a == (409, "not_admitted".to_owned())),
        "{answers:?}"
    );
    let after = command_calls(&mut counted).await;
    let scripts = count(&after, "evalsha") - count(&before, "evalsha");
    assert_eq!(scripts, 0, "80 early purchases made {scripts} script calls");
    let reads = count(&after, "hmget") - count(&before, "hmget");
    assert!(reads <= 1, "80 early purchases read the sale {reads} times");
    app.cleanup().await;
}

/// Redis loses everything mid-queue: every token already given still admits its holder at
/// its time (the schedule is in the sale's definition), and no later join gets a place
/// already given (the line goes on above the ceiling JetStream recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_loss_mid_queue_gives_no_place_twice_and_honours_every_token() {
    let mut redis = LosableRedis::start().await;
    let app = app_on(&redis).await;
    let sku = unique("queue-loss");
    app.create_sale(&sku, queued_sale(1_000, now_ms(), 100, 60))
        .await;
    // 1,500 places: past the first reservation of 1,000.
    let joined: Vec<(String, u64, String)> = futures::stream::iter(users(&sku, 1_500))
        .map(|user| {
            let (app, sku) = (&app, &sku);
            async move {
                let (status, body) = join(app, sku, &user).await;
                assert_eq!(status, 201, "{body}");
                let place = body["position"].as_u64().expect("place");
                (
                    user,
                    place,
                    body["token"].as_str().expect("token").to_owned(),
                )
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let before = queue_in_redis(&app, &sku).await;

    redis.restart_empty_for(&[&app]).await;

    // Every admitted token buys; every later one is told the time it was told before.
    let now = now_ms();
    let mut bought = 0;
    for (user, place, token) in joined.iter().filter(|(_, p, _)| p % 50 == 0) {
        let admit_at = before.schedule.admit_time(*place).expect("admitting");
        let response = buy_with(&app, &sku, user, Some(token)).await;
        if admit_at + 200 < now {
            assert_eq!(
                response.status().as_u16(),
                201,
                "place {place} admitted at {admit_at}"
            );
            bought += 1;
        } else if admit_at > now_ms() + 1_000 {
            let (status, code) = error_of(response).await;
            assert_eq!(
                (status, code.as_str()),
                (409, "not_admitted"),
                "place {place}"
            );
        }
    }
    assert!(bought > 0, "some places were admitted before the loss");
    assert_eq!(
        queue_in_redis(&app, &sku).await,
        before,
        "the schedule came back as it was"
    );

    // New buyers, and old ones joining again (Redis forgot them), get places never given.
    let given: HashSet<u64> = joined.iter().map(|(_, p, _)| *p).collect();
    let mut again: Vec<String> = users(&format!("{sku}-after"), 200);
    again.extend(joined.iter().take(50).map(|(user, _, _)| user.clone()));
    let places: Vec<u64> = futures::stream::iter(again)
        .map(|user| {
            let (app, sku) = (&app, &sku);
            async move {
                let (status, body) = join(app, sku, &user).await;
                assert!([200, 201].contains(&status), "{body}");
                body["position"].as_u64().expect("place")
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let fresh: HashSet<u64> = places.iter().copied().collect();
    assert_eq!(fresh.len(), 250, "no place given twice after the loss");
    assert!(
        fresh.is_disjoint(&given),
        "no place given before the loss given again"
    );
    assert!(
        fresh.iter().all(|&p| p > 1_500),
        "the line goes on after the loss"
    );
    app.cleanup().await;
}

/// The waiting room's metrics, counted by an app process of the test's own: joins by result,
/// the line's length and the places admitted per sale, and each refused purchase by its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_lines_and_refusals_are_counted() {
    use crate::helpers::metrics::{sample, scrape};
    let (_process, app) = crate::helpers::spawn_metered(crate::helpers::test_settings()).await;
    let sku = unique("queue-metrics");
    // Ten a second from the PUT (a new queue on an open sale starts admitting then).
    app.create_sale(&sku, queued_sale(100, now_ms() - 1_000, 10, 60))
        .await;
    let mut tokens = Vec::new();
    for user in users(&sku, 30) {
        let (_, body) = join(&app, &sku, &user).await;
        tokens.push((user, body["token"].as_str().expect("token").to_owned()));
    }
    assert_eq!(join(&app, &sku, &tokens[0].0).await.0, 200);
    let (last_user, last_token) = &tokens[29];
    assert_eq!(
        error_of(buy_with(&app, &sku, last_user, Some(last_token)).await).await,
        (409, "not_admitted".into())
    );
    assert_eq!(
        error_of(buy_with(&app, &sku, "mallory", Some(last_token)).await).await,
        (401, "invalid_queue_token".into())
    );
    assert_eq!(
        error_of(buy_with(&app, &sku, last_user, None).await).await,
        (401, "invalid_queue_token".into())
    );

    // About ten admitted after a second; place 30 not for two more.
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    let text = scrape(&app).await;
    let series = |name: &str| sample(&text, name);
    assert_eq!(
        series("flashsale_queue_joins_total{result=\"placed\"}"),
        30.0
    );
    assert_eq!(series("flashsale_queue_joins_total{result=\"again\"}"), 1.0);
    assert_eq!(
        series(&format!("flashsale_queue_places{{sku=\"{sku}\"}}")),
        30.0
    );
    let admitted = series(&format!("flashsale_queue_admitted{{sku=\"{sku}\"}}"));
    assert!((10.0..30.0).contains(&admitted), "admitted {admitted}");
    assert_eq!(
        series("flashsale_purchases_total{outcome=\"not_admitted\"}"),
        1.0
    );
    assert_eq!(
        series("flashsale_purchases_total{outcome=\"invalid_queue_token\"}"),
        2.0
    );
    app.cleanup().await;
}

/// Hundreds of buyers in line all try to buy at once, again and again, while admission runs:
/// every order is made inside its buyer's admission (its `created_at`, Redis's clock, between
/// the place's admission and its lapse), no buyer buys twice, and the stock stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stampede_in_line_buys_only_inside_admissions_and_never_past_the_stock() {
    let app = spawn_app().await;
    let sku = unique("queue-stampede");
    // 300 buyers, 100 admitted a second, each for one second; 150 units.
    app.create_sale(&sku, queued_sale(150, now_ms(), 100, 1))
        .await;
    let buyers = users(&sku, 300);
    let joined: Vec<(String, u64, String)> = futures::stream::iter(&buyers)
        .map(|user| {
            let (app, sku) = (&app, &sku);
            async move {
                let (_, body) = join(app, sku, user).await;
                let place = body["position"].as_u64().expect("place");
                (
                    user.clone(),
                    place,
                    body["token"].as_str().expect("token").to_owned(),
                )
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let queue = queue_in_redis(&app, &sku).await;
    let deadline = now_ms() + 5_000;
    // Each buyer tries every 50 ms until it bought, its admission lapsed, or time is up;
    // every third comes back only after its admission lapsed, and must buy nothing.
    let late = |place: u64| place.is_multiple_of(3);
    let orders: Vec<(u64, Value)> = futures::stream::iter(&joined)
        .map(|(user, place, token)| {
            let (app, sku, queue) = (&app, &sku, &queue);
            async move {
                if late(*place) {
                    let lapsed = queue.schedule.admit_time(*place).expect("admitting") + 1_100;
                    let wait = (lapsed - now_ms()).max(0) as u64;
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                let mut bought = Vec::new();
                while now_ms() < deadline {
                    let response = buy_with(app, sku, user, Some(token)).await;
                    match response.status().as_u16() {
                        201 | 202 => bought.push((*place, response.json().await.expect("order"))),
                        409 => {
                            let body: Value = response.json().await.expect("error");
                            match body["error"].as_str() {
                                Some("not_admitted") => {}
                                Some("admission_expired" | "sold_out" | "user_limit_reached") => {
                                    break;
                                }
                                other => panic!("place {place}: {other:?} {body}"),
                            }
                        }
                        status => panic!("place {place}: {status}"),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                bought
            }
        })
        .buffer_unordered(300)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    assert_eq!(orders.len(), 150, "the stock sold out, exactly");
    assert_eq!(app.redis_sold(&sku).await, 150);
    let mut places = HashSet::new();
    for (place, order) in &orders {
        assert!(places.insert(*place), "place {place} bought twice");
        assert!(
            !late(*place),
            "place {place} bought after its admission lapsed"
        );
        let created =
            chrono::DateTime::parse_from_rfc3339(order["created_at"].as_str().expect("created_at"))
                .expect("RFC 3339")
                .timestamp_millis();
        let admitted = queue.schedule.admit_time(*place).expect("admitting");
        assert!(
            (admitted..admitted + 1_000).contains(&created),
            "place {place} bought at {created}, admitted {admitted}-{}",
            admitted + 1_000
        );
    }
    app.cleanup().await;
}

/// A join is decided only on a copy of the sale this Redis primary wrote: one another primary
/// wrote (a failover's replica, a restart from a dump) is rebuilt from JetStream first, as for
/// a purchase; and no place is handed out above the ceiling JetStream recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_trust_only_this_primarys_copy_and_stay_below_the_recorded_ceiling() {
    let app = spawn_app().await;
    let sku = unique("queue-copy");
    app.create_sale(&sku, queued_sale(5, now_ms() - 1_000, 10, 30))
        .await;
    let mut redis = app.redis.clone();
    let _: () = redis::cmd("HSET")
        .arg(app.key(&sku, "sale"))
        .arg("primary")
        .arg("elsewhere/2")
        .query_async(&mut redis)
        .await
        .expect("HSET");
    assert_eq!(join(&app, &sku, "after-a-failover").await.0, 201);
    let primary = app.redis_hget(&sku, "sale", "primary").await;
    assert_ne!(
        primary.as_deref(),
        Some("elsewhere/2"),
        "the copy was rebuilt first"
    );

    // Around the first reservation (1,000 places): never a place above the ceiling.
    let line = unique("queue-ceiling");
    app.create_sale(&line, queued_sale(5, now_ms() - 1_000, 10, 30))
        .await;
    let buyers = users(&line, 1_003);
    futures::stream::iter(&buyers[..995])
        .for_each_concurrent(50, |user| {
            let (app, line) = (&app, &line);
            async move {
                assert_eq!(join(app, line, user).await.0, 201);
            }
        })
        .await;
    for user in &buyers[995..] {
        assert_eq!(join(&app, &line, user).await.0, 201);
        let field = |name| {
            let app = &app;
            let line = &line;
            async move {
                app.redis_hget(line, "sale", name)
                    .await
                    .and_then(|v| v.parse::<u64>().ok())
                    .expect("a counter")
            }
        };
        let (next, ceiling) = (field("q_next").await, field("q_ceiling").await);
        assert!(
            next <= ceiling,
            "place {next} handed out above the ceiling {ceiling}"
        );
    }
    app.cleanup().await;
}

/// Without FLASHSALE_QUEUE_KEY no token could be signed: a PUT with a queue is refused, one
/// without takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_needs_the_key_its_tokens_are_signed_with() {
    let app = crate::helpers::spawn_app_with(|settings| settings.http.queue_key = None).await;
    let sku = unique("queue-keyless");
    let response = app.put_sale(&sku, queued_sale(5, now_ms(), 10, 30)).await;
    assert_eq!(error_of(response).await, (400, "invalid_request".into()));
    app.create_sale(&sku, json!({"stock": 5})).await;
    app.cleanup().await;
}
