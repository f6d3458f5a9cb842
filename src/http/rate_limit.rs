//! Rate limits in front of the stock: per buyer and per client address, checked before any
//! Redis work, so a bot firing thousands of purchases a second costs Redis no more than the
//! limit lets through. Each replica counts on its own (in memory, GCRA from `governor`): with
//! n replicas behind a balancer a buyer gets up to n times the limit.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::support::settings::{HttpSettings, RateLimit};

/// Which limit refused a request (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Buyer,
    Client,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Buyer => "buyer",
            Limit::Client => "client",
        }
    }
}

/// Over a limit: which one, and how long until the next request would pass.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    pub limit: Limit,
    pub retry_after: Duration,
}

pub struct RateLimits {
    buyer: Option<DefaultKeyedRateLimiter<String>>,
    client: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trusted_proxies: Vec<IpAddr>,
    clock: DefaultClock,
}

fn limiter<K: Hash + Eq + Clone>(limit: RateLimit) -> DefaultKeyedRateLimiter<K> {
    // The settings refuse 0, so both are non-zero.
    let rate = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
}

impl RateLimits {
    pub fn new(settings: &HttpSettings) -> Self {
        Self {
            buyer: settings.buyer_rate.map(limiter),
            client: settings.client_rate.map(limiter),
            trusted_proxies: settings.trusted_proxies.clone(),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one purchase of `buyer` from the client of `request` against both limits.
    pub fn check(&self, request: &HttpRequest, buyer: &str) -> Result<(), Refused> {
        if let (Some(client), Some(address)) = (&self.client, self.client_address(request)) {
            self.count(client, &address, Limit::Client)?;
        }
        if let Some(buyers) = &self.buyer {
            self.count(buyers, &buyer.to_owned(), Limit::Buyer)?;
        }
        Ok(())
    }

    fn count<K: Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
        limit: Limit,
    ) -> Result<(), Refused> {
        limiter.check_key(key).map_err(|not_until| {
            let refused = Refused {
                limit,
                retry_after: not_until.wait_time_from(self.clock.now()),
            };
            crate::support::metrics::record_rate_limited(limit.as_str());
            refused
        })
    }

    /// The socket's peer; behind a trusted proxy, the last address of `X-Forwarded-For` the
    /// trusted proxies did not add themselves.
    fn client_address(&self, request: &HttpRequest) -> Option<IpAddr> {
        let peer = request.peer_addr()?.ip();
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded = request
            .headers()
            .get("X-Forwarded-For")
            .and_then(|value| value.to_str().ok());
        let Some(forwarded) = forwarded else {
            return Some(peer);
        };
        forwarded
            .rsplit(',')
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .find(|hop| !self.trusted_proxies.contains(hop))
            .or(Some(peer))
    }

    /// Forgets buyers and clients whose allowance is whole again (memory stays bounded by
    /// the buyers of the last few seconds).
    pub fn forget_idle(&self) {
        if let Some(buyers) = &self.buyer {
            buyers.retain_recent();
            buyers.shrink_to_fit();
        }
        if let Some(clients) = &self.client {
            clients.retain_recent();
            clients.shrink_to_fit();
        }
    }
}
