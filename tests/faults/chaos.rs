//! The chaos suite: two replicas, the order consumer, Redis, NATS and a PostgreSQL schema of
//! the test's own, a mixed load (purchases with idempotent retries, payments, expiries,
//! cancels, restocks), and a seeded schedule of faults: a replica killed (`kill -9`), Redis
//! restarted empty, Redis paused, NATS killed and restarted, the consumer killed,
//! PostgreSQL's connections ended. Then everything is let settle, and a ledger compares what
//! every client was answered with what JetStream, PostgreSQL and the audit hold.
//!
//! FLASHSALE_CHAOS_SECS sets the length (CI: 60), FLASHSALE_CHAOS_SEED replays a schedule
//! (the seed is printed first). docs/durability.md, "Reliability", has the figures of a 10-minute run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flashsale::domain::event::EventKind;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::fixtures::{
    ADMIN_TOKEN, ALONE, Environment, Process, Schema, Server, audit, delete_stream, delivered,
    nats_server, outbox_backlog, put_sale, redis_server, signal, unique,
};
use crate::servers::{PrivateNatsCluster, PrivateRedisCluster};

/// Users buy from this pool, so per-user limits bind.
const USERS: usize = 200;
const BUYERS: usize = 16;

/// xorshift64*: a seeded, replayable sequence.
#[derive(Clone)]
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

/// The sales of a run: (name, settings). Restocks raise `plain`'s stock.
fn sales() -> Vec<(&'static str, Value)> {
    vec![
        ("plain", json!({"stock": 1500})),
        (
            "timed",
            json!({"stock": 150, "per_user_limit": 2, "payment_timeout_secs": 2}),
        ),
        ("limited", json!({"stock": 250, "per_user_limit": 1})),
    ]
}

/// Where the run's stores live: single servers, or a Redis Cluster (3 masters, 3
/// replicas) and a three-node NATS cluster with the streams at R3
/// (FLASHSALE_CHAOS_TOPOLOGY=cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    Single,
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillReplica(usize),
    ConsumerKill,
    PostgresConnectionsEnded,
    /// Single servers.
    RedisRestartEmpty,
    RedisPause,
    NatsKill,
    /// Clusters: the master of a sale's slot killed (its replica takes over; the node
    /// rejoins as a replica), or paused past the node timeout; the order stream's leader
    /// killed; another NATS node killed.
    MasterKill,
    MasterPause,
    StreamLeaderKill,
    NatsNodeKill,
}

impl Fault {
    fn all(topology: Topology) -> Vec<Fault> {
        let mut all = vec![
            Fault::KillReplica(0),
            Fault::KillReplica(1),
            Fault::ConsumerKill,
            Fault::PostgresConnectionsEnded,
        ];
        all.extend(match topology {
            Topology::Single => [Fault::RedisRestartEmpty, Fault::RedisPause, Fault::NatsKill],
            Topology::Cluster => [
                Fault::MasterKill,
                Fault::MasterPause,
                Fault::StreamLeaderKill,
            ],
        });
        if topology == Topology::Cluster {
            all.push(Fault::NatsNodeKill);
        }
        all
    }

    fn name(self) -> String {
        match self {
            Fault::KillReplica(i) => format!("replica {i} kill -9"),
            Fault::ConsumerKill => "consumer kill -9".into(),
            Fault::PostgresConnectionsEnded => "postgres connections ended".into(),
            Fault::RedisRestartEmpty => "redis restarted empty".into(),
            Fault::RedisPause => "redis SIGSTOP".into(),
            Fault::NatsKill => "nats kill -9".into(),
            Fault::MasterKill => "redis master kill -9".into(),
            Fault::MasterPause => "redis master SIGSTOP".into(),
            Fault::StreamLeaderKill => "stream leader kill -9".into(),
            Fault::NatsNodeKill => "nats node kill -9".into(),
        }
    }
}

/// One fault of the schedule: when it strikes, and how long the server stays down.
#[derive(Debug, Clone, Copy)]
struct Strike {
    at: Duration,
    fault: Fault,
    down: Duration,
    /// Which sale's master, or which NATS node, where that is the fault's to choose.
    pick: u64,
}

fn schedule(seed: u64, length: Duration, topology: Topology) -> Vec<Strike> {
    let mut random = Random(seed | 1);
    let faults = Fault::all(topology);
    let mut strikes = Vec::new();
    let mut at = random.millis(2_000, 4_000);
    while at + Duration::from_secs(4) < length {
        let fault = faults[random.below(faults.len() as u64) as usize];
        let down = match fault {
            Fault::RedisPause | Fault::NatsKill | Fault::MasterPause => random.millis(1_000, 3_000),
            Fault::MasterKill | Fault::StreamLeaderKill | Fault::NatsNodeKill => {
                random.millis(2_000, 5_000)
            }
            Fault::KillReplica(_) | Fault::ConsumerKill => random.millis(500, 2_000),
            Fault::RedisRestartEmpty | Fault::PostgresConnectionsEnded => Duration::ZERO,
        };
        let pick = random.next();
        strikes.push(Strike {
            at,
            fault,
            down,
            pick,
        });
        at += down + random.millis(3_000, 7_000);
    }
    strikes
}

/// The run's Redis and NATS (one value a run: the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Backends {
    Single {
        redis: Server,
        nats: Server,
    },
    Cluster {
        redis: PrivateRedisCluster,
        nats: PrivateNatsCluster,
    },
}

impl Backends {
    async fn start(topology: Topology) -> Self {
        match topology {
            Topology::Single => Backends::Single {
                redis: redis_server().await,
                nats: nats_server().await,
            },
            Topology::Cluster => Backends::Cluster {
                redis: PrivateRedisCluster::start().await,
                nats: PrivateNatsCluster::start().await,
            },
        }
    }

    fn environment(&self) -> Environment {
        match self {
            Backends::Single { redis, nats } => Environment::new(
                &format!("redis://127.0.0.1:{}", redis.port),
                &format!("nats://127.0.0.1:{}", nats.port),
            ),
            Backends::Cluster { redis, nats } => {
                let mut environment = Environment::new(
                    &redis.seeds(),
                    &nats
                        .urls()
                        .iter()
                        .map(|u| format!("nats://{}:{}", u.host(), u.port()))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                environment.set("FLASHSALE_STREAM_REPLICAS", 3);
                // A loaded three-copy stream acknowledges slower; elections take seconds.
                environment.set("FLASHSALE_CONFIRM_TIMEOUT_MS", 2000);
                environment
            }
        }
    }
}

/// Every server and process of a run.
struct Stores {
    backends: Backends,
    replicas: Vec<Process>,
    consumer: Process,
    schema: Schema,
    environment: Environment,
    /// The sales' skus, for a fault that picks a sale's master.
    skus: Vec<String>,
}

impl Stores {
    async fn strike(&mut self, strike: &Strike) {
        match (strike.fault, &mut self.backends) {
            (Fault::KillReplica(i), _) => {
                self.replicas[i].kill().await;
                tokio::time::sleep(strike.down).await;
                self.replicas[i].start().await;
            }
            (Fault::ConsumerKill, _) => {
                self.consumer.kill().await;
                tokio::time::sleep(strike.down).await;
                self.consumer.start().await;
            }
            (Fault::PostgresConnectionsEnded, _) => {
                self.schema.terminate_connections().await;
            }
            (Fault::RedisRestartEmpty, Backends::Single { redis, .. }) => {
                redis.kill().await;
                redis.start().await;
            }
            (Fault::RedisPause, Backends::Single { redis, .. }) => {
                redis.pause();
                tokio::time::sleep(strike.down).await;
                redis.resume();
            }
            (Fault::NatsKill, Backends::Single { nats, .. }) => {
                nats.kill().await;
                tokio::time::sleep(strike.down).await;
                nats.start().await;
            }
            (Fault::MasterKill | Fault::MasterPause, Backends::Cluster { redis, .. }) => {
                let sku = &self.skus[(strike.pick % self.skus.len() as u64) as usize];
                let key = format!("{}:{{{sku}}}:sale", self.environment.namespace);
                let port = redis.master_of(&key).await;
                if strike.fault == Fault::MasterKill {
                    redis.kill(port).await;
                    tokio::time::sleep(strike.down).await;
                    redis.restart(port).await;
                } else {
                    let pid = redis.pid(port);
                    signal(pid, "-STOP");
                    tokio::time::sleep(strike.down).await;
                    signal(pid, "-CONT");
                }
            }
            (Fault::StreamLeaderKill | Fault::NatsNodeKill, Backends::Cluster { nats, .. }) => {
                let leader = nats.leader_of(&self.environment.stream).await;
                let node = if strike.fault == Fault::StreamLeaderKill {
                    leader
                } else {
                    (leader + 1 + (strike.pick % 2) as usize) % 3
                };
                nats.kill(node).await;
                tokio::time::sleep(strike.down).await;
                nats.restart(node).await;
            }
            (fault, _) => panic!("{} is not a fault of this topology", fault.name()),
        }
    }
}

/// What a client was answered.
#[derive(Debug, Clone)]
struct Purchase {
    key: String,
    user: String,
    sale: String,
    status: u16,
    order_id: Option<String>,
    /// `delivery` of the answer: `pending` when JetStream had not confirmed it.
    pending: bool,
    at: Duration,
}

#[derive(Debug, Clone)]
struct Ending {
    order_id: String,
    action: &'static str,
    status: u16,
    /// For a pay: `delivered`; for a cancel: `delivery` == confirmed.
    confirmed: bool,
}

#[derive(Default)]
struct Record {
    purchases: Vec<Purchase>,
    endings: Vec<Ending>,
    /// Answers by status, every request (0: no answer, a replica down).
    statuses: BTreeMap<u16, usize>,
    /// GETs of a sale that showed more sold than stock.
    oversold_reads: Vec<String>,
    /// The highest stock any PUT asked for, per sale.
    stock: HashMap<String, u64>,
}

struct Load {
    record: Mutex<Record>,
    stop: AtomicBool,
    started: Instant,
    client: reqwest::Client,
    replicas: Vec<String>,
    skus: HashMap<String, String>,
}

impl Load {
    fn count(&self, status: u16) {
        *self.record.lock().statuses.entry(status).or_default() += 1;
    }

    fn replica(&self, random: &mut Random) -> &str {
        &self.replicas[random.below(self.replicas.len() as u64) as usize]
    }

    /// A buyer: a purchase at a time, each retried with its Idempotency-Key while the answer
    /// is 503 or none (a replica down), on any replica.
    async fn buyer(self: Arc<Self>, mut random: Random) {
        let names: Vec<&str> = sales().iter().map(|(name, _)| *name).collect();
        let mut next = 0;
        while !self.stop.load(Ordering::Relaxed) {
            next += 1;
            let sale = names[random.below(names.len() as u64) as usize].to_owned();
            let user = format!("u{}", random.below(USERS as u64));
            let key = format!("{user}-{}-{next}", random.next());
            for _ in 0..20 {
                let url = format!(
                    "{}/v1/sales/{}/orders",
                    self.replica(&mut random),
                    self.skus[&sale]
                );
                let answer = self
                    .client
                    .post(url)
                    .header("Idempotency-Key", &key)
                    .json(&json!({"user_id": user, "quantity": 1}))
                    .send()
                    .await;
                let (status, body) = match answer {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        (status, response.json::<Value>().await.unwrap_or_default())
                    }
                    Err(_) => (0, Value::Null),
                };
                self.count(status);
                self.record.lock().purchases.push(Purchase {
                    key: key.clone(),
                    user: user.clone(),
                    sale: sale.clone(),
                    status,
                    order_id: body["order_id"].as_str().map(str::to_owned),
                    pending: body["delivery"] == "pending",
                    at: self.started.elapsed(),
                });
                if !matches!(status, 0 | 503) {
                    break;
                }
                tokio::time::sleep(random.millis(100, 400)).await;
            }
        }
    }

    /// Pays about half of the timed sale's orders, cancels some of every sale's.
    async fn ender(self: Arc<Self>, mut random: Random) {
        let mut done: HashSet<String> = HashSet::new();
        while !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(random.millis(50, 150)).await;
            let candidate = {
                let record = self.record.lock();
                let accepted: Vec<&Purchase> = record
                    .purchases
                    .iter()
                    .rev()
                    .take(50)
                    .filter(|p| matches!(p.status, 201 | 202))
                    .collect();
                if accepted.is_empty() {
                    continue;
                }
                let chosen = accepted[random.below(accepted.len() as u64) as usize];
                (chosen.order_id.clone(), chosen.sale.clone())
            };
            let (Some(order_id), sale) = candidate else {
                continue;
            };
            if !done.insert(order_id.clone()) {
                continue;
            }
            let (action, body) = match random.below(10) {
                0..=4 if sale == "timed" => (
                    "pay",
                    Some(json!({"payment_ref": format!("psp-{order_id}")})),
                ),
                0 => ("cancel", None),
                _ => continue,
            };
            let mut request = self
                .client
                .post(format!(
                    "{}/v1/orders/{order_id}/{action}",
                    self.replica(&mut random)
                ))
                .bearer_auth(ADMIN_TOKEN);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let (status, body) = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (status, response.json::<Value>().await.unwrap_or_default())
                }
                Err(_) => (0, Value::Null),
            };
            self.count(status);
            let confirmed = match action {
                "pay" => body["delivered"] == true,
                _ => body["delivery"] == "confirmed",
            };
            self.record.lock().endings.push(Ending {
                order_id,
                action,
                status,
                confirmed,
            });
        }
    }

    /// Raises `plain`'s stock now and then, as a restock.
    async fn restocker(self: Arc<Self>, mut random: Random) {
        let mut stock = 1500;
        while !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(random.millis(3_000, 6_000)).await;
            stock += 100;
            self.record.lock().stock.insert("plain".into(), stock);
            let status = put_sale(
                self.replica(&mut random),
                &self.skus["plain"],
                json!({"stock": stock}),
            )
            .await;
            self.count(status);
        }
    }

    /// Reads every sale on every replica: sold never above stock.
    async fn sampler(self: Arc<Self>) {
        while !self.stop.load(Ordering::Relaxed) {
            for replica in &self.replicas {
                for (name, sku) in &self.skus {
                    let Ok(response) = self
                        .client
                        .get(format!("{replica}/v1/sales/{sku}"))
                        .send()
                        .await
                    else {
                        self.count(0);
                        continue;
                    };
                    let status = response.status().as_u16();
                    self.count(status);
                    if status == 200 {
                        let sale: Value = response.json().await.unwrap_or_default();
                        if sale["sold"].as_u64() > sale["stock"].as_u64() {
                            self.record
                                .lock()
                                .oversold_reads
                                .push(format!("{name}: {sale}"));
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// An order as the stream tells it.
#[derive(Debug, Default)]
struct Told {
    user: String,
    sku: String,
    quantity: u64,
    /// created, paid, expired, cancelled: messages of each kind.
    kinds: BTreeMap<&'static str, usize>,
    /// The first ending event, which decides.
    ending: Option<&'static str>,
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Created => "created",
        EventKind::Paid => "paid",
        EventKind::Expired => "expired",
        EventKind::Cancelled => "cancelled",
    }
}

fn fold(messages: &[crate::fixtures::Delivered]) -> HashMap<String, Told> {
    let mut orders: HashMap<String, Told> = HashMap::new();
    for m in messages {
        let told = orders.entry(m.event.order_id.clone()).or_default();
        told.user = m.event.user_id.clone();
        told.sku = m.event.sku.clone();
        told.quantity = u64::from(m.event.quantity);
        let kind = kind_name(m.event.event);
        *told.kinds.entry(kind).or_default() += 1;
        if kind != "created" && told.ending.is_none() {
            told.ending = Some(kind);
        }
    }
    orders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_fault_schedule_leaves_an_exact_ledger() {
    let _alone = ALONE.lock().await;
    let length = Duration::from_secs(
        std::env::var("FLASHSALE_CHAOS_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let seed: u64 = std::env::var("FLASHSALE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let topology = match std::env::var("FLASHSALE_CHAOS_TOPOLOGY").as_deref() {
        Err(_) | Ok("single") => Topology::Single,
        Ok("cluster") => Topology::Cluster,
        Ok(other) => panic!("FLASHSALE_CHAOS_TOPOLOGY={other}: expected single or cluster"),
    };
    let strikes = schedule(seed, length, topology);
    println!(
        "chaos: FLASHSALE_CHAOS_SEED={seed} FLASHSALE_CHAOS_SECS={} FLASHSALE_CHAOS_TOPOLOGY={topology:?}",
        length.as_secs()
    );
    for strike in &strikes {
        println!(
            "  {:>6.1}s {} (down {:?})",
            strike.at.as_secs_f64(),
            strike.fault.name(),
            strike.down
        );
    }

    let backends = Backends::start(topology).await;
    let schema = Schema::create().await;
    let mut environment = backends.environment();
    environment.database_url = schema.url.clone();
    environment.set("FLASHSALE_CONFIRM", "jetstream");
    environment.set("FLASHSALE_RELAY_CLAIM_IDLE_MS", 1000);
    environment.set("FLASHSALE_SOLD_OUT_RECHECK_MS", 200);
    let replicas = vec![
        Process::service(&environment).await,
        Process::service(&environment).await,
    ];
    let consumer = Process::consumer(&environment).await;
    let run = unique("chaos");
    let skus: HashMap<String, String> = sales()
        .into_iter()
        .map(|(name, _)| (name.to_owned(), format!("{run}-{name}")))
        .collect();
    let mut stores = Stores {
        backends,
        replicas,
        consumer,
        schema,
        environment: environment.clone(),
        skus: skus.values().cloned().collect(),
    };
    println!(
        "  logs: {} {} {}",
        stores.replicas[0].log.display(),
        stores.replicas[1].log.display(),
        stores.consumer.log.display()
    );

    let mut initial_stock = HashMap::new();
    for (name, settings) in sales() {
        assert_eq!(
            put_sale(&stores.replicas[0].url(""), &skus[name], settings.clone()).await,
            201
        );
        initial_stock.insert(name.to_owned(), settings["stock"].as_u64().expect("stock"));
    }
    let load = Arc::new(Load {
        record: Mutex::new(Record {
            stock: initial_stock,
            ..Record::default()
        }),
        stop: AtomicBool::new(false),
        started: Instant::now(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        replicas: stores.replicas.iter().map(|r| r.url("")).collect(),
        skus: skus.clone(),
    });
    let mut random = Random(seed ^ 0x9E37_79B9_7F4A_7C15 | 1);
    let mut tasks = Vec::new();
    for _ in 0..BUYERS {
        tasks.push(tokio::spawn(load.clone().buyer(Random(random.next() | 1))));
    }
    tasks.push(tokio::spawn(load.clone().ender(Random(random.next() | 1))));
    tasks.push(tokio::spawn(
        load.clone().restocker(Random(random.next() | 1)),
    ));
    tasks.push(tokio::spawn(load.clone().sampler()));

    // The schedule, in time.
    let mut struck = Vec::new();
    for strike in &strikes {
        tokio::time::sleep_until((load.started + strike.at).into()).await;
        let began = load.started.elapsed();
        stores.strike(strike).await;
        let ended = load.started.elapsed();
        // The consumer's faults cost delivery to PostgreSQL, not answers: the time until
        // rows arrive again.
        let resumed = match strike.fault {
            Fault::ConsumerKill | Fault::PostgresConnectionsEnded => {
                stores.schema.rows_grow_after(Duration::from_secs(15)).await
            }
            _ => None,
        };
        struck.push((*strike, began, ended, resumed));
    }
    tokio::time::sleep_until((load.started + length).into()).await;
    load.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("load task");
    }
    let record = std::mem::take(&mut *load.record.lock());

    // Settle: every sale read (a sale Redis lost is rebuilt, its deadlines with it), every
    // payment window passed, the outboxes empty, PostgreSQL caught up with the stream.
    let client = reqwest::Client::new();
    let settled = Instant::now();
    let (messages, rows) = loop {
        for replica in &load.replicas {
            for sku in skus.values() {
                let _ = client.get(format!("{replica}/v1/sales/{sku}")).send().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let waiting = outbox_backlog(&environment).await.unwrap_or(u64::MAX);
        let messages = delivered(&environment).await;
        let orders = fold(&messages);
        let rows = stores.schema.rows().await;
        let pending_due = orders
            .values()
            .any(|o| o.ending.is_none() && o.sku.ends_with("-timed"));
        let caught_up = orders.len() == rows.len()
            && orders.iter().all(|(id, o)| {
                rows.get(id).map(String::as_str)
                    == Some(o.ending.unwrap_or(if o.sku.ends_with("-timed") {
                        "pending_payment"
                    } else {
                        "created"
                    }))
            });
        if waiting == 0 && !pending_due && caught_up {
            break (messages, rows);
        }
        assert!(
            settled.elapsed() < Duration::from_secs(120),
            "not settled after 120 s: outbox {waiting}, pending orders left {pending_due}, postgres {} rows for {} orders",
            rows.len(),
            orders.len()
        );
    };
    println!("  settled in {:?}", settled.elapsed());

    // The ledger.
    let orders = fold(&messages);
    let mut failures: Vec<String> = Vec::new();
    // A message's id is its entry's: its first event's id, `+<n>` for n > 1 events.
    let mut by_message: BTreeMap<u64, Vec<&crate::fixtures::Delivered>> = BTreeMap::new();
    for m in &messages {
        by_message.entry(m.sequence).or_default().push(m);
    }
    for events in by_message.values() {
        let first = &events[0].event;
        let mut expected = match first.event {
            EventKind::Created => first.order_id.clone(),
            kind => format!("{}.{}", first.order_id, kind_name(kind)),
        };
        if events.len() > 1 {
            expected = format!("{expected}+{}", events.len());
        }
        if events[0].message_id != expected {
            failures.push(format!(
                "message id {} for {expected}",
                events[0].message_id
            ));
        }
    }
    for (id, told) in &orders {
        for (kind, n) in &told.kinds {
            if *n != 1 {
                failures.push(format!("order {id}: {n} {kind} events in the stream"));
            }
        }
        if told.kinds.len() > 2 || !told.kinds.contains_key("created") {
            failures.push(format!("order {id}: events {:?}", told.kinds));
        }
    }
    // Answers: an order id belongs to one buyer; every 201/200 is in the stream as created,
    // for the buyer it was answered to.
    let mut owner: HashMap<&str, &str> = HashMap::new();
    let mut answered_by_key: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut lost_202 = 0;
    for p in &record.purchases {
        let Some(id) = p.order_id.as_deref() else {
            continue;
        };
        if let Some(other) = owner.insert(id, &p.user)
            && other != p.user
        {
            failures.push(format!("order {id} answered to {other} and {}", p.user));
        }
        answered_by_key.entry(&p.key).or_default().insert(id);
        // Answered as held by JetStream: 201, or a 200 replay not marked pending.
        let durable = matches!(p.status, 200 | 201) && !p.pending;
        match (durable, orders.get(id)) {
            (true, Some(told)) if told.user != p.user => failures.push(format!(
                "order {id} answered to {}, in the stream for {}",
                p.user, told.user
            )),
            (true, None) => failures.push(format!(
                "order {id} answered {} is not in the stream",
                p.status
            )),
            (false, None) => lost_202 += 1,
            _ => {}
        }
    }
    for (key, ids) in &answered_by_key {
        let confirmed: HashSet<&&str> = ids.iter().filter(|id| orders.contains_key(**id)).collect();
        if confirmed.len() > 1 {
            failures.push(format!(
                "Idempotency-Key {key} answered with orders {ids:?}"
            ));
        }
    }
    // Endings answered as durable are in the stream; an unconfirmed cancel that is missing
    // (lost with Redis) may leave its units sold twice, as docs/durability.md says.
    let mut lost_cancels: HashMap<String, u64> = HashMap::new();
    let mut lost_cancel_users: HashMap<(String, String), u64> = HashMap::new();
    for e in record.endings.iter().filter(|e| e.status == 200) {
        let told = orders.get(&e.order_id);
        let ending = told.and_then(|t| t.ending);
        match (e.action, e.confirmed, ending) {
            ("pay", true, Some("paid")) | ("cancel", true, Some("cancelled")) => {}
            ("pay", true, other) | ("cancel", true, other) => failures.push(format!(
                "{} of {} answered as delivered, the stream ends it {other:?}",
                e.action, e.order_id
            )),
            ("cancel", false, other) if other != Some("cancelled") => {
                if let Some(told) = told {
                    *lost_cancels.entry(told.sku.clone()).or_default() += told.quantity;
                    *lost_cancel_users
                        .entry((told.sku.clone(), told.user.clone()))
                        .or_default() += told.quantity;
                }
            }
            _ => {}
        }
    }
    // Nothing oversold, no per-user limit passed, in the record.
    let mut live: HashMap<&str, u64> = HashMap::new();
    let mut held: HashMap<(&str, &str), u64> = HashMap::new();
    for told in orders.values() {
        if matches!(told.ending, None | Some("paid")) {
            *live.entry(&told.sku).or_default() += told.quantity;
            *held.entry((&told.sku, &told.user)).or_default() += told.quantity;
        }
    }
    for (name, settings) in sales() {
        let sku = &skus[name];
        let stock = record.stock[name];
        let sold = live.get(sku.as_str()).copied().unwrap_or(0);
        let excused = lost_cancels.get(sku).copied().unwrap_or(0);
        if sold > stock + excused {
            failures.push(format!(
                "{name}: {sold} units live in the stream, stock {stock}"
            ));
        }
        if let Some(limit) = settings["per_user_limit"].as_u64() {
            for ((s, user), units) in &held {
                let excused = lost_cancel_users
                    .get(&(s.to_string(), user.to_string()))
                    .copied()
                    .unwrap_or(0);
                if *s == sku.as_str() && *units > limit + excused {
                    failures.push(format!("{name}: {user} holds {units}, limit {limit}"));
                }
            }
        }
    }
    if lost_cancels.is_empty() && !record.oversold_reads.is_empty() {
        failures.push(format!(
            "reads with sold above stock: {:?}",
            &record.oversold_reads[..record.oversold_reads.len().min(3)]
        ));
    }
    // PostgreSQL equals the stream (checked when settling), and the answers were all ones the
    // API documents, 5xx only as 503.
    for status in record.statuses.keys() {
        if !matches!(status, 0 | 200 | 201 | 202 | 409 | 503) {
            failures.push(format!("{} answers {status}", record.statuses[status]));
        }
    }
    let (code, table) = audit(&environment).await;
    if code != 0 {
        failures.push(format!("audit exit {code}:\n{table}"));
    }

    // What each fault cost buyers: purchases answered 503 or not at all (sent from its start
    // to 5 s after its end, or to the next fault), and for how long: from its start to the
    // last of them. The
    // consumer's faults cost delivery instead: the time until rows arrive again.
    println!("  fault                         failed purchases   failing for   rows again after");
    let mut by_kind: BTreeMap<String, (usize, usize, Duration, Option<Duration>)> = BTreeMap::new();
    for (at, (strike, began, ended, resumed)) in struck.iter().enumerate() {
        // Up to 5 s after the fault's end, but never into the next fault's time.
        let until = struck
            .get(at + 1)
            .map_or(*ended + Duration::from_secs(5), |next| {
                next.1.min(*ended + Duration::from_secs(5))
            });
        let failed: Vec<Duration> = record
            .purchases
            .iter()
            .filter(|p| p.at >= *began && p.at < until)
            .filter(|p| matches!(p.status, 0 | 503))
            .map(|p| p.at)
            .collect();
        let failing_for = failed
            .iter()
            .max()
            .map_or(Duration::ZERO, |last| last.saturating_sub(*began));
        println!(
            "  {:<30} {:>16}   {failing_for:>11.2?}   {resumed:?}",
            strike.fault.name(),
            failed.len()
        );
        let kind = by_kind
            .entry(strike.fault.name().replace(['0', '1'], "n"))
            .or_default();
        kind.0 += 1;
        kind.1 = kind.1.max(failed.len());
        kind.2 = kind.2.max(failing_for);
        kind.3 = kind.3.max(*resumed);
    }
    println!(
        "  | fault | times | most failed purchases in one | longest failing | rows again after, at most |"
    );
    for (name, (times, failed, failing_for, resumed)) in &by_kind {
        let resumed = resumed.map_or("".to_owned(), |r| format!("{r:.2?}"));
        println!("  | {name} | {times} | {failed} | {failing_for:.2?} | {resumed} |");
    }
    println!(
        "  answers {:?}; {} orders in the stream, {} rows; {} answered 202 (or a pending replay) and lost with Redis; {} unconfirmed cancels lost; {} oversold reads",
        record.statuses,
        orders.len(),
        rows.len(),
        lost_202,
        lost_cancels.values().sum::<u64>(),
        record.oversold_reads.len()
    );
    assert!(
        failures.is_empty(),
        "ledger (seed {seed}):\n{}",
        failures.join("\n")
    );

    stores.consumer.kill().await;
    stores.schema.drop().await;
    delete_stream(&stores.environment).await;
}
