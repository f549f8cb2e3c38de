//! Wiring: from settings to a running worker.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::erase::Eraser;
use crate::keyed_hash::KeyedHash;
use crate::outbox::Outbox;
use crate::plan::{Plan, check};
use crate::worker::Worker;

/// Everything built from the settings, ready to run.
pub struct Application {
    pub settings: Settings,
    pub pool: PgPool,
    pub eraser: Eraser,
}

impl Application {
    /// Creates and migrates the database, loads the plan and checks it against the live
    /// schema. A plan with gaps stops here, with a message naming each gap.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = crate::db::prepare(&settings.database)
            .await
            .context("preparing the database")?;
        let plan = Plan::load(settings.erasure.plan.as_deref())?;
        check::against_live_schema(&plan, &pool).await?;
        let key = match &settings.erasure.source_id_key {
            Some(key) => key.expose().as_bytes().to_vec(),
            None => crate::db::instance_source_id_key(&pool).await?,
        };
        let eraser = Eraser::new(
            pool.clone(),
            plan,
            KeyedHash::new(&key),
            settings.worker.max_attempts,
        );
        Ok(Self {
            settings,
            pool,
            eraser,
        })
    }

    /// The consumer and the event publisher, until `shutdown`.
    pub async fn run_worker(self, shutdown: CancellationToken) {
        let outbox = Outbox::new(self.pool.clone(), self.eraser.count_keys());
        let worker = Worker {
            eraser: self.eraser.clone(),
            outbox: outbox.clone(),
            amqp: self.settings.amqp.clone(),
            settings: self.settings.worker.clone(),
        };
        let publisher = tokio::spawn(outbox.run(self.settings.amqp.clone(), shutdown.clone()));
        worker.run(shutdown).await;
        // The publisher drains what the last erasures owe, briefly.
        if tokio::time::timeout(Duration::from_secs(10), publisher)
            .await
            .is_err()
        {
            tracing::warn!(
                "event publisher did not finish in time; the next start publishes what is owed"
            );
        }
        self.pool.close().await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received; shutting down"),
        _ = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
