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
}

#[derive(Clone, Debug, Deserialize)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub lock_timeout_ms: u64,
    pub idle_in_transaction_timeout_ms: u64,
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
}

#[derive(Clone, Debug, Deserialize)]
pub struct HttpSettings {
    pub addr: SocketAddr,
}

#[derive(Clone, Debug, Deserialize)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub prefetch: u16,
    pub max_attempts: u32,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ErasureSettings {
    /// Path of the erasure plan; `None` is the built-in plan for the reference schema.
    pub plan: Option<PathBuf>,
    /// Key of the keyed hash that stands in for source ids; `None` uses the database's own.
    pub source_id_key: Option<Secret>,
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

impl Settings {
    /// Reads the layers from `dir` (normally `config/`) and the process environment.
    pub fn load(dir: &Path) -> Result<Self, Box<figment::Error>> {
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

    /// The built-in defaults alone, ignoring files and environment (for tests).
    pub fn built_in() -> Self {
        Figment::new()
            .merge(Toml::string(BUILT_IN))
            .extract()
            .expect("the built-in configuration is valid")
    }
}
