//! Layered configuration: the built-in defaults (`config/default.toml`, compiled in), the same
//! file on disk if present, `config/$ERASURE_ENV.toml`, then environment variables.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

const BUILT_IN: &str = include_str!("../config/default.toml");

#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub http: HttpSettings,
    pub worker: WorkerSettings,
    pub erasure: ErasureSettings,
    pub proof: ProofSettings,
    pub console: ConsoleSettings,
    pub records: RecordsSettings,
}

/// How long the service keeps its own records ([`crate::proof::purge`]).
#[derive(Clone, Debug, Deserialize)]
pub struct RecordsSettings {
    /// CANCELED deletions, and FAILED ones that owe nothing any more, ended longer ago than
    /// this are removed ("0": kept for ever). DONE deletions are always kept.
    pub keep_deletions: Keep,
    /// Audit rows sealed longer ago than this are removed, whole seals at a time, with a purge
    /// seal that records it ("0": kept for ever).
    pub keep_audit: Keep,
}

/// How long records are kept: a whole number and a unit (`s`, `m`, `h`, `d`), or `0` for ever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keep(pub Option<std::time::Duration>);

impl Keep {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(Self(None));
        }
        let (number, unit) = text.split_at(text.len().saturating_sub(1));
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => 0,
        };
        let n: u64 = number.parse().ok().filter(|_| seconds > 0).ok_or_else(|| {
            format!("{text:?} is not a whole number with a unit (s, m, h, d), nor 0")
        })?;
        Ok(Self(Some(std::time::Duration::from_secs(n * seconds))))
    }
}

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub lock_timeout_ms: u64,
    pub idle_in_transaction_timeout_ms: u64,
    /// PostgreSQL 14 and later: how often a running statement checks that its client is still
    /// there; 0 leaves the server's setting (for older servers).
    pub client_connection_check_interval_ms: u64,
    pub reference_schema: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AmqpSettings {
    pub url: Secret,
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub events_exchange: String,
    pub delivery_limit: u32,
    /// AMQP heartbeat interval asked of the broker, in seconds.
    pub heartbeat_secs: u16,
}

#[derive(Clone, Debug, Deserialize)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// Requests each API key may make per minute, counted across every replica.
    pub rate_limit_per_minute: u32,
    /// Failed key attempts (an unknown or revoked key over the API, a refused sign-in) each
    /// client address may make per minute.
    pub failed_keys_per_minute: u32,
    /// How long a request accepted over HTTP may stay unpublished before the relay publishes it.
    pub relay_after_ms: u64,
    /// Connections served at once (lowered to fit the open-files limit).
    pub max_connections: usize,
    /// A connection with no request in progress is closed after this long without a byte.
    pub idle_timeout_ms: u64,
    /// A request's line and headers must arrive within this from its first byte.
    pub header_timeout_ms: u64,
    /// A request's body must arrive, and its answer be written, within this after its headers.
    pub request_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct WorkerSettings {
    /// Batches handled at once.
    pub concurrency: usize,
    pub prefetch: u16,
    /// The most deliveries erased in one statement.
    pub batch_max: usize,
    /// How long a batch may wait for more deliveries (milliseconds); 0: never.
    pub batch_wait_ms: u64,
    pub max_attempts: u32,
    /// Deliveries of one request that may start an erasure; the next is a poison message.
    pub max_deliveries: u32,
    /// On SIGTERM/SIGINT, how long in-flight erasures may take to finish.
    pub shutdown_grace_ms: u64,
    /// Where `erasure worker` serves /healthz, /readyz and /metrics; unset, it serves nothing.
    pub ops_addr: Option<SocketAddr>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ErasureSettings {
    /// Path of the erasure plan; `None` is the built-in plan for the reference schema.
    pub plan: Option<PathBuf>,
    /// Key of the keyed hash that stands in for source ids; `None` uses the database's own.
    pub source_id_key: Option<Secret>,
    /// A customer with more rows than this in one table is erased in chunks.
    pub chunk_threshold: i64,
    /// The most rows one chunk takes, each chunk its own short transaction.
    pub chunk_rows: i64,
    /// How long one chunk's transaction should take (milliseconds); chunks are sized to it.
    pub chunk_ms: u64,
    /// The longest a preview reads (milliseconds) before it is stopped and answered "try
    /// later" (HTTP 503 with Retry-After).
    pub preview_timeout_ms: u64,
    /// How long each request is held before it is carried out ("0", "90s", "30m", "72h",
    /// "14d").
    pub grace_period: GracePeriod,
    /// Refuse to start when the worker's sessions cannot keep what they erase out of the
    /// server's log ([`crate::exhaust`]); otherwise a warning at start.
    #[serde(default)]
    pub require_quiet_logging: bool,
}

/// A grace period, written as a whole number and a unit (`s`, `m`, `h`, `d`), or `0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GracePeriod(pub std::time::Duration);

impl GracePeriod {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(Self::default());
        }
        let (number, unit) = text.split_at(text.len().saturating_sub(1));
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => 0,
        };
        let n: u64 = number.parse().map_err(|_| ())
            .ok()
            .filter(|_| seconds > 0)
            .ok_or_else(|| format!("erasure.grace_period {text:?} is not a whole number with a unit (s, m, h, d), nor 0"))?;
        // A month at most: more would pass the due date of every request.
        if n * seconds > 31 * 86_400 {
            return Err(format!(
                "erasure.grace_period {text:?} is longer than the month a request is due in"
            ));
        }
        Ok(Self(std::time::Duration::from_secs(n * seconds)))
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// The period as a signed duration, to add to a time.
    pub fn chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

impl<'de> Deserialize<'de> for GracePeriod {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Seconds(u64),
        }
        match Written::deserialize(deserializer)? {
            Written::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
            Written::Seconds(0) => Ok(Self::default()),
            Written::Seconds(n) => Self::parse(&format!("{n}s")).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct ConsoleSettings {
    /// How long a console session lasts after sign-in (hours).
    pub session_hours: i64,
    /// Mark the session cookie `Secure` (the console is served over HTTPS, by a proxy).
    pub secure_cookie: bool,
    /// The most rows one CSV export holds; past it, its last line says so.
    pub csv_max_rows: i64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ProofSettings {
    /// The key receipts and audit seals are signed with: 32 bytes, base64 or hex.
    pub signing_key: Option<Secret>,
    /// A file holding that key (when `signing_key` is not set).
    pub signing_key_file: Option<PathBuf>,
    /// The public keys receipts and seals are checked against, pinned outside the database: a
    /// JWK set file, or its `http://` address. Unset: the keys the database holds, which shows
    /// only that the records agree with keys their own database holds.
    pub trusted_keys: Option<String>,
    /// How old the oldest audit row not yet sealed may grow before a warning (milliseconds).
    pub unsealed_warn_ms: u64,
    /// How often the check after commit looks for DONE deletions to check (milliseconds);
    /// 0: never (they stay queued).
    pub verify_every_ms: u64,
    /// How often the audit log is sealed (milliseconds); 0: never.
    pub seal_every_ms: u64,
    /// How long the WAL and its archive are kept (the operator's): the receipt's residue says
    /// erased bytes remain there until commit time plus this. Unset: unknown.
    #[serde(default)]
    pub wal_retention: Option<Retention>,
    /// How long backups are kept (the operator's); unset: unknown.
    #[serde(default)]
    pub backup_retention: Option<Retention>,
    /// How often the residue of checked DONE deletions is cleared and recorded, a batch at a
    /// time (milliseconds); 0: never.
    #[serde(default = "default_residue_every_ms")]
    pub residue_every_ms: u64,
    /// A materialized view the plan lists is refreshed after erasures at most this often
    /// (milliseconds); deletions wait for the refresh to record their residue.
    #[serde(default = "default_refresh_views_every_ms")]
    pub refresh_views_every_ms: u64,
    /// A table is analyzed after erasures changed this many of its rows since its last
    /// ANALYZE by the service (its statistics may hold erased values until then); 0: never.
    #[serde(default = "default_analyze_after_rows")]
    pub analyze_after_rows: i64,
}

fn default_residue_every_ms() -> u64 {
    5000
}

fn default_refresh_views_every_ms() -> u64 {
    60_000
}

fn default_analyze_after_rows() -> i64 {
    10_000
}

/// How long something is kept, written as a whole number and a unit (`s`, `m`, `h`, `d`, `w`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention(pub std::time::Duration);

impl Retention {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (number, unit) = text.split_at(text.len().saturating_sub(1));
        let seconds: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => 0,
        };
        number
            .parse::<u64>()
            .ok()
            .filter(|_| seconds > 0)
            .and_then(|n| n.checked_mul(seconds))
            .map(|s| Self(std::time::Duration::from_secs(s)))
            .ok_or_else(|| format!("{text:?} is not a whole number with a unit (s, m, h, d, w)"))
    }

    /// The retention as a signed duration, to add to a time.
    pub fn chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A value that must not appear in logs or `Debug` output (URLs carry passwords).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Read(#[from] Box<figment::Error>),
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Reads the layers from `dir` (normally `config/`) and the process environment, and checks
    /// that the values fit together.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let settings = Self::read(dir)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Values each layer accepts on its own but that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let (worker, http, erasure) = (&self.worker, &self.http, &self.erasure);
        let counts: [(&str, u64); 17] = [
            ("worker.concurrency", worker.concurrency as u64),
            ("worker.prefetch", u64::from(worker.prefetch)),
            ("worker.max_attempts", u64::from(worker.max_attempts)),
            ("worker.max_deliveries", u64::from(worker.max_deliveries)),
            ("worker.batch_max", worker.batch_max as u64),
            (
                "erasure.chunk_threshold",
                erasure.chunk_threshold.max(0) as u64,
            ),
            ("erasure.chunk_rows", erasure.chunk_rows.max(0) as u64),
            ("erasure.chunk_ms", erasure.chunk_ms),
            ("erasure.preview_timeout_ms", erasure.preview_timeout_ms),
            (
                "http.rate_limit_per_minute",
                u64::from(http.rate_limit_per_minute),
            ),
            ("http.max_connections", http.max_connections as u64),
            (
                "http.failed_keys_per_minute",
                u64::from(http.failed_keys_per_minute),
            ),
            ("http.idle_timeout_ms", http.idle_timeout_ms),
            ("http.header_timeout_ms", http.header_timeout_ms),
            ("http.request_timeout_ms", http.request_timeout_ms),
            ("amqp.delivery_limit", u64::from(self.amqp.delivery_limit)),
            (
                "database.max_connections",
                u64::from(self.database.max_connections),
            ),
        ];
        let zero: Vec<&str> = counts
            .iter()
            .filter(|(_, value)| *value == 0)
            .map(|(name, _)| *name)
            .collect();
        if !zero.is_empty() {
            return invalid(format!("{} must be at least 1", zero.join(", ")));
        }
        if worker.max_deliveries >= self.amqp.delivery_limit {
            return invalid(format!(
                "worker.max_deliveries ({}) must be below amqp.delivery_limit ({}), the broker's backstop",
                worker.max_deliveries, self.amqp.delivery_limit
            ));
        }
        if usize::from(worker.prefetch) < worker.concurrency {
            return invalid(format!(
                "worker.prefetch ({}) must be at least worker.concurrency ({}), or slots stay idle",
                worker.prefetch, worker.concurrency
            ));
        }
        // Each worker slot keeps a connection; the outbox and the other paths need one more.
        if (self.database.max_connections as usize) <= worker.concurrency {
            return invalid(format!(
                "database.max_connections ({}) must exceed worker.concurrency ({}): each slot keeps a connection and the outbox needs one",
                self.database.max_connections, worker.concurrency
            ));
        }
        Ok(())
    }

    fn read(dir: &Path) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::new()
            .merge(Toml::string(BUILT_IN))
            .merge(Toml::file(dir.join("default.toml")));
        if let Ok(env) = std::env::var("ERASURE_ENV") {
            figment = figment.merge(Toml::file(dir.join(format!("{env}.toml"))));
        }
        figment
            .merge(Env::prefixed("ERASURE_").map(|key| {
                // The three addresses have flat names; everything else is SECTION__KEY.
                match key.as_str().to_ascii_lowercase().as_str() {
                    "database_url" => "database.url".into(),
                    "amqp_url" => "amqp.url".into(),
                    "http_addr" => "http.addr".into(),
                    other => other.replace("__", ".").into(),
                }
            }))
            .extract()
            .map_err(Box::new)
    }

    /// The environment variables that give a child `erasure` process this configuration's
    /// database and broker (URLs and every name).
    pub fn connection_environment(&self) -> Vec<(&'static str, String)> {
        let amqp = &self.amqp;
        vec![
            (
                "ERASURE_DATABASE_URL",
                self.database.url.expose().to_owned(),
            ),
            ("ERASURE_AMQP_URL", amqp.url.expose().to_owned()),
            ("ERASURE_AMQP__EXCHANGE", amqp.exchange.clone()),
            ("ERASURE_AMQP__QUEUE", amqp.queue.clone()),
            ("ERASURE_AMQP__ROUTING_KEY", amqp.routing_key.clone()),
            (
                "ERASURE_AMQP__DEAD_LETTER_EXCHANGE",
                amqp.dead_letter_exchange.clone(),
            ),
            (
                "ERASURE_AMQP__DEAD_LETTER_QUEUE",
                amqp.dead_letter_queue.clone(),
            ),
            (
                "ERASURE_AMQP__EVENTS_EXCHANGE",
                amqp.events_exchange.clone(),
            ),
        ]
    }

    /// The built-in defaults alone, ignoring files and environment (for tests).
    pub fn built_in() -> Self {
        Figment::new()
            .merge(Toml::string(BUILT_IN))
            .extract()
            .expect("the built-in configuration is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods_read_with_a_unit_and_stay_within_a_month() {
        let secs = |t: &str| GracePeriod::parse(t).map(|g| g.0.as_secs());
        assert_eq!(secs("0"), Ok(0));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("30m"), Ok(1800));
        assert_eq!(secs("72h"), Ok(259_200));
        assert_eq!(secs("14d"), Ok(1_209_600));
        for bad in ["", "7", "7w", "d", "-1d", "1.5h", "40d"] {
            assert!(GracePeriod::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn retentions_read_with_a_unit() {
        let secs = |t: &str| Retention::parse(t).map(|r| r.0.as_secs());
        assert_eq!(secs("7d"), Ok(604_800));
        assert_eq!(secs("2w"), Ok(1_209_600));
        assert_eq!(secs("36h"), Ok(129_600));
        for bad in ["", "7", "d", "-1d", "1.5d", "7y"] {
            assert!(Retention::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_built_in_configuration_is_valid() {
        Settings::built_in().validate().unwrap();
    }

    #[test]
    fn a_pool_no_larger_than_the_worker_slots_is_refused() {
        let mut settings = Settings::built_in();
        settings.database.max_connections = settings.worker.concurrency as u32;
        let message = settings.validate().unwrap_err().to_string();
        assert!(message.contains("database.max_connections"), "{message}");
    }

    #[test]
    fn a_prefetch_below_the_concurrency_is_refused() {
        let mut settings = Settings::built_in();
        settings.worker.prefetch = 1;
        let message = settings.validate().unwrap_err().to_string();
        assert!(message.contains("worker.prefetch"), "{message}");
    }

    #[test]
    fn chunks_without_rows_or_time_are_refused() {
        let mut settings = Settings::built_in();
        settings.erasure.chunk_ms = 0;
        let message = settings.validate().unwrap_err().to_string();
        assert!(message.contains("erasure.chunk_ms"), "{message}");
        let mut settings = Settings::built_in();
        settings.erasure.chunk_rows = 0;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn zero_slots_are_refused() {
        let mut settings = Settings::built_in();
        settings.worker.concurrency = 0;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn every_zero_limit_is_named() {
        let mut settings = Settings::built_in();
        settings.http.idle_timeout_ms = 0;
        settings.http.max_connections = 0;
        let message = settings.validate().unwrap_err().to_string();
        assert_eq!(
            message,
            "http.max_connections, http.idle_timeout_ms must be at least 1"
        );
    }
}
