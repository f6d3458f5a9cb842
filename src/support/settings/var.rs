//! One environment variable's value on its way to a typed setting: each parser names the
//! variable in the error it returns.

use std::net::{SocketAddr, ToSocketAddrs};

use secrecy::SecretString;

use super::{ConfigError, Confirm, RateLimit};
use crate::domain::Sku;

/// A limit from its rate variable (unset: no limit) and burst variable (unset: the rate).
pub(super) fn rate_limit(
    lookup: &impl Fn(&str) -> Option<String>,
    rate: &'static str,
    burst: &'static str,
) -> Result<Option<RateLimit>, ConfigError> {
    let Some(value) = lookup(rate) else {
        return Ok(None);
    };
    let per_second = Var { name: rate, value }.number(1, 1_000_000)? as u32;
    let burst = match lookup(burst) {
        Some(value) => Var { name: burst, value }.number(1, 1_000_000)? as u32,
        None => per_second,
    };
    Ok(Some(RateLimit { per_second, burst }))
}

/// One environment variable's value on its way to a typed setting.
pub(super) struct Var {
    pub name: &'static str,
    pub value: String,
}

impl Var {
    pub fn refuse<T>(self, expected: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError {
            variable: self.name,
            value: self.value,
            expected: expected.into(),
        })
    }

    pub fn non_empty(self) -> Result<String, ConfigError> {
        if self.value.trim().is_empty() {
            return self.refuse("must not be empty");
        }
        Ok(self.value)
    }

    pub fn socket_addr(self) -> Result<SocketAddr, ConfigError> {
        match self.value.to_socket_addrs().map(|mut addrs| addrs.next()) {
            Ok(Some(addr)) => Ok(addr),
            _ => self.refuse("expected host:port, e.g. 127.0.0.1:8080 (port 0 = any free port)"),
        }
    }

    /// One redis:// URL, or several comma-separated (the seed nodes of a cluster).
    pub fn redis_url(self) -> Result<String, ConfigError> {
        let invalid = self
            .value
            .split(',')
            .find_map(|url| redis::Client::open(url.trim()).err());
        match invalid {
            None => Ok(self.value),
            Some(e) => self.refuse(format!(
                "expected a redis:// URL, comma-separated for a cluster's seed nodes ({e})"
            )),
        }
    }

    /// One or more comma-separated NATS server addresses.
    pub fn nats_urls(self) -> Result<Vec<async_nats::ServerAddr>, ConfigError> {
        let parsed: Result<Vec<_>, _> = self
            .value
            .split(',')
            .map(|url| url.trim().parse())
            .collect();
        match parsed {
            Ok(urls) => Ok(urls),
            Err(_) => self.refuse("expected nats://host:port, comma-separated for several servers"),
        }
    }

    /// Comma-separated bearer tokens, none empty.
    /// A token or a key: not empty, and kept out of `Debug` from here on.
    pub fn secret(self) -> Result<SecretString, ConfigError> {
        self.non_empty().map(SecretString::from)
    }

    pub fn tokens(self) -> Result<Vec<SecretString>, ConfigError> {
        let tokens: Vec<String> = self.value.split(',').map(|t| t.trim().to_owned()).collect();
        if tokens.iter().any(String::is_empty) {
            // The value is a secret: the error does not repeat it.
            return Err(ConfigError {
                variable: self.name,
                value: "<hidden>".into(),
                expected: "comma-separated tokens, none empty".into(),
            });
        }
        Ok(tokens.into_iter().map(SecretString::from).collect())
    }

    /// Comma-separated web origins, each exactly `scheme://host[:port]` (what a browser sends
    /// in `Origin`): no wildcard, no path, so a typo cannot open the API to every site.
    pub fn origins(self) -> Result<Vec<String>, ConfigError> {
        let origins: Vec<String> = self
            .value
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        let exact = |origin: &str| {
            let Some((scheme, host)) = origin.split_once("://") else {
                return false;
            };
            matches!(scheme, "http" | "https")
                && !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        };
        if origins.iter().all(|o| exact(o)) {
            Ok(origins)
        } else {
            self.refuse("comma-separated origins like https://shop.example:8443 (no *, no path)")
        }
    }

    /// Seconds, up to ten years; 0 = no limit (`None`).
    pub fn seconds_or_none(self) -> Result<Option<std::time::Duration>, ConfigError> {
        let secs = self.number(0, 10 * 365 * 86_400)?;
        Ok((secs > 0).then(|| std::time::Duration::from_secs(secs)))
    }

    /// Bytes, at least 1 MiB (JetStream's smallest sensible store); 0 = no limit (`None`).
    pub fn bytes_or_none(self) -> Result<Option<u64>, ConfigError> {
        let (variable, value) = (self.name, self.value.clone());
        match self.number(0, i64::MAX as u64)? {
            0 => Ok(None),
            1..=1_048_575 => Err(ConfigError {
                variable,
                value,
                expected: "0 (no limit) or at least 1048576".into(),
            }),
            bytes => Ok(Some(bytes)),
        }
    }

    /// Comma-separated IP addresses.
    pub fn ip_addrs(self) -> Result<Vec<std::net::IpAddr>, ConfigError> {
        let parsed: Result<Vec<_>, _> = self
            .value
            .split(',')
            .filter(|ip| !ip.trim().is_empty())
            .map(|ip| ip.trim().parse())
            .collect();
        match parsed {
            Ok(ips) => Ok(ips),
            Err(_) => self.refuse("expected IP addresses, comma-separated"),
        }
    }

    pub fn switch(self) -> Result<bool, ConfigError> {
        match self.value.as_str() {
            "on" | "true" | "1" => Ok(true),
            "off" | "false" | "0" => Ok(false),
            _ => self.refuse("expected on or off"),
        }
    }

    pub fn confirm(self) -> Result<Confirm, ConfigError> {
        match self.value.as_str() {
            "redis" => Ok(Confirm::Redis),
            "jetstream" => Ok(Confirm::JetStream),
            _ => self.refuse("expected redis or jetstream"),
        }
    }

    pub fn postgres_url(self) -> Result<String, ConfigError> {
        match self.value.parse::<tokio_postgres::Config>() {
            Ok(_) => Ok(self.value),
            Err(e) => self.refuse(format!("expected a postgres:// URL ({e})")),
        }
    }

    /// Redis key prefix: no braces (they would steal the `{sku}` hash tag) and no spaces.
    pub fn key_prefix(self) -> Result<String, ConfigError> {
        let ok = !self.value.is_empty()
            && self.value.len() <= 64
            && self
                .value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
        if !ok {
            return self.refuse("expected 1-64 characters of [A-Za-z0-9_.:-]");
        }
        Ok(self.value)
    }

    /// One NATS subject token / stream name: no dots, wildcards or whitespace.
    pub fn nats_token(self) -> Result<String, ConfigError> {
        let ok = !self.value.is_empty()
            && self
                .value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return self.refuse("expected characters of [A-Za-z0-9_-]");
        }
        Ok(self.value)
    }

    pub fn sku(self) -> Result<Sku, ConfigError> {
        match Sku::parse(&self.value) {
            Ok(sku) => Ok(sku),
            Err(e) => self.refuse(e.0),
        }
    }

    pub fn number(self, min: u64, max: u64) -> Result<u64, ConfigError> {
        match self.value.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => self.refuse(format!("expected a whole number from {min} to {max}")),
        }
    }
}
