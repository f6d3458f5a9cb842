//! The buyer's page, `GET /sales/{sku}`, in a real browser: Debian's headless Chromium, driven
//! over WebDriver (chromedriver, through fantoccini). The page is served by one replica and
//! calls another on a second origin (CORS), as a storefront's page would.
//!
//! Screenshots are kept in `target/browser-test/` as test artefacts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::{free_port, spawn_app_from, spawn_app_with, unique, users, wait_for_port};

/// A chromedriver of the test's own, killed when dropped.
struct Browser {
    _driver: tokio::process::Child,
    client: Client,
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect(
                "chromedriver runs (Debian's chromium-driver; scripts/services.sh installs it)",
            );
        wait_for_port(port).await;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=900,700"],
            }),
        );
        let client = ClientBuilder::native()
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a headless chromium session");
        Self {
            _driver: driver,
            client,
        }
    }

    async fn text(&self, id: &str) -> String {
        match self.client.find(Locator::Id(id)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits up to 10 s for element `id`'s text to satisfy `ready`; its text then.
    async fn wait_text(&self, id: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text(id).await;
            if ready(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "#{id} never became ready; it reads {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn outcome(&self) -> Option<String> {
        let result = self.client.find(Locator::Id("result")).await.ok()?;
        result.attr("data-outcome").await.ok()?
    }

    async fn wait_outcome(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(outcome) = self.outcome().await {
                return outcome;
            }
            assert!(
                Instant::now() < deadline,
                "the purchase was never answered on the page"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-test");
        std::fs::create_dir_all(&dir).expect("artefact directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_buyer_sees_the_count_fall_buys_once_and_is_refused_a_second_time() {
    // The page's origin: a replica of its own. The API's origin lists it for CORS.
    let page_app = spawn_app_with(|_| {}).await;
    let mut api_settings = page_app.settings.clone();
    api_settings.http.cors_origins = vec![page_app.address.clone()];
    let api = spawn_app_from(api_settings).await;
    let sku = unique("page");
    let ends_at =
        flashsale::domain::sale::format_time(chrono::Utc::now().timestamp_millis() + 3_600_000);
    api.create_sale(
        &sku,
        json!({"stock": 20, "per_user_limit": 1, "price": 1999, "ends_at": ends_at}),
    )
    .await;

    let browser = Browser::start().await;
    let url = format!(
        "{}/sales/{sku}?api={}&user=browser-buyer",
        page_app.address, api.address
    );
    browser.client.goto(&url).await.expect("the page loads");
    browser.wait_text("remaining", |t| t == "20").await;
    assert_eq!(browser.text("stock").await, "20");
    assert_eq!(browser.text("state").await, "on sale");
    // The countdown runs on the server's clock: an hour, less the moments since the PUT.
    let countdown = browser.text("countdown").await;
    assert!(
        countdown.starts_with("Ends in 00:59:") || countdown == "Ends in 01:00:00",
        "{countdown}"
    );

    // Other buyers buy on the API's replica: the page's count falls.
    let others = crate::helpers::buy_all(&api, &sku, &users(&sku, 5), 5).await;
    assert_eq!(others.len(), 5);
    browser.wait_text("remaining", |t| t == "15").await;
    browser.screenshot("1-count-falling").await;

    // A click buys, across origins.
    let button = browser
        .client
        .find(Locator::Id("buy"))
        .await
        .expect("buy button");
    button.click().await.expect("clicked");
    assert_eq!(browser.wait_outcome().await, "created");
    let result = browser.text("result").await;
    assert!(result.starts_with("Ordered! Order "), "{result}");
    browser.wait_text("remaining", |t| t == "14").await;
    browser.screenshot("2-bought").await;

    // A second click is refused: the sale allows one per buyer.
    browser
        .client
        .execute(
            "document.getElementById('result').removeAttribute('data-outcome')",
            vec![],
        )
        .await
        .expect("outcome cleared");
    let button = browser
        .client
        .find(Locator::Id("buy"))
        .await
        .expect("buy button");
    button.click().await.expect("clicked again");
    assert_eq!(browser.wait_outcome().await, "user_limit_reached");
    assert_eq!(
        browser.text("result").await,
        "You already hold the most this sale allows."
    );
    browser.screenshot("3-refused").await;

    // The rest sells elsewhere: the page says so and the button goes grey.
    let rest = crate::helpers::buy_all(&api, &sku, &users(&format!("{sku}-rest"), 20), 10).await;
    assert_eq!(rest.len(), 14);
    browser.wait_text("state", |t| t == "sold out").await;
    assert_eq!(browser.text("remaining").await, "0");
    let button = browser
        .client
        .find(Locator::Id("buy"))
        .await
        .expect("buy button");
    assert!(
        !button.is_enabled().await.expect("enabled?"),
        "no buying a sold-out sale"
    );
    browser.screenshot("4-sold-out").await;

    // What the page did, seen from the API: one order for the browser's buyer.
    let listed: serde_json::Value = api
        .client
        .get(api.url(&format!("/v1/sales/{sku}/orders?user_id=browser-buyer")))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("orders");
    assert_eq!(
        listed["orders"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(api.sale_json(&sku).await["remaining"], 0);
    browser.client.close().await.expect("session closed");
    api.cleanup().await;
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_and_a_bad_sku_is_refused() {
    let app = spawn_app_with(|_| {}).await;
    let page = app.get("/sales/some-sale").await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let html = page.text().await.expect("html");
    assert!(html.contains("/static/sale.js") && html.contains("/static/sale.css"));
    for (asset, kind) in [("sale.js", "text/javascript"), ("sale.css", "text/css")] {
        let response = app.get(&format!("/static/{asset}")).await;
        assert_eq!(response.status(), 200, "{asset}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap_or_default()
                .starts_with(kind)
        );
    }
    assert_eq!(app.get("/static/nothing.js").await.status(), 404);
    assert_eq!(app.get("/sales/no%20good").await.status(), 400);
}

/// A sale with a waiting room: a buyer joins, sees its place and wait, is admitted and buys;
/// a second buyer behind the stock sees sold out the moment the first buys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queued_buyer_joins_waits_is_admitted_and_buys_and_the_one_behind_sees_sold_out() {
    let app = spawn_app_with(|_| {}).await;
    let sku = unique("page-queue");
    let now = chrono::Utc::now().timestamp_millis();
    // One place a second from two seconds on: the first buyer waits about two seconds.
    app.create_sale(
        &sku,
        json!({"stock": 1, "per_user_limit": 1,
               "starts_at": flashsale::domain::sale::format_time(now + 2_000),
               "queue": {"admit_per_sec": 1, "opens_before_secs": 600, "admission_secs": 60}}),
    )
    .await;

    let first = Browser::start().await;
    let second = Browser::start().await;
    for (browser, user) in [(&first, "queued-first"), (&second, "queued-second")] {
        let url = format!("{}/sales/{sku}?user={user}", app.address);
        browser.client.goto(&url).await.expect("the page loads");
        browser
            .wait_text("place", |t| t == "Join the line to buy.")
            .await;
        let buy = browser.client.find(Locator::Id("buy")).await.expect("buy");
        assert!(
            !buy.is_enabled().await.expect("enabled?"),
            "no buying before joining"
        );
        let join = browser
            .client
            .find(Locator::Id("join"))
            .await
            .expect("join");
        join.click().await.expect("joined");
        // Joined before the start: the place is drawn at the start, then shown.
        browser
            .wait_text("place", |t| {
                t.starts_with("You are in line") || t.starts_with("You are number")
            })
            .await;
    }
    // The draw at the start places both, in some order; the first in line buys.
    let placed = |text: &str| text.starts_with("You are number");
    let first_place = first.wait_text("place", placed).await;
    let second_place = second.wait_text("place", placed).await;
    let (ahead, behind) = if first_place.starts_with("You are number 1") {
        (&first, &second)
    } else {
        (&second, &first)
    };
    let mut places = [first_place, second_place].map(|t| t[..16].to_owned());
    places.sort();
    assert_eq!(
        places,
        ["You are number 1", "You are number 2"],
        "one place each"
    );
    ahead.screenshot("5-queue-placed").await;
    ahead
        .wait_text("place", |t| {
            t == "You are number 1: it is your turn, buy now."
        })
        .await;
    let buy = ahead.client.find(Locator::Id("buy")).await.expect("buy");
    assert!(
        buy.is_enabled().await.expect("enabled?"),
        "admitted: the button is on"
    );
    buy.click().await.expect("clicked");
    assert_eq!(ahead.wait_outcome().await, "created");
    ahead.screenshot("6-queue-bought").await;

    // The stock is gone: the one behind stops waiting at once.
    behind
        .wait_text("place", |t| t == "Sold out: the line has closed.")
        .await;
    assert_eq!(behind.text("state").await, "sold out");
    let buy = behind.client.find(Locator::Id("buy")).await.expect("buy");
    assert!(!buy.is_enabled().await.expect("enabled?"));
    behind.screenshot("7-queue-sold-out").await;
    assert_eq!(app.sale_json(&sku).await["sold"], 1);
    first.client.close().await.expect("closed");
    second.client.close().await.expect("closed");
    app.cleanup().await;
}
