//! Wiring: from settings to a running service.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Publisher;
use crate::config::Settings;
use crate::erase::{Eraser, Limits};
use crate::http;
use crate::intake::Intake;
use crate::keyed_hash::KeyedHash;
use crate::outbox::Outbox;
use crate::plan::{Plan, check};
use crate::proof::signing::{Custody, KeySet, Signer};
use crate::proof::verification::Verifier;
use crate::worker::Worker;

/// Everything built from the settings, ready to run.
pub struct Application {
    pub settings: Settings,
    pub pool: PgPool,
    pub eraser: Eraser,
    pub intake: Intake,
    /// Signs receipts and audit seals.
    pub signer: Signer,
    /// The public keys pinned by `proof.trusted_keys`, if any.
    pub pinned: Option<KeySet>,
    /// The check after commit of DONE deletions.
    pub verifier: Verifier,
    /// What each checked DONE erasure left behind, cleared where it can and recorded.
    pub residue: crate::proof::residue::Recorder,
}

/// What a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The consumer and the HTTP API.
    All,
    /// The consumer, with only the operations routes over HTTP.
    Worker,
    /// The HTTP API alone.
    Api,
}

impl Application {
    /// Creates and migrates the database, loads the plan and checks it against the live
    /// schema. A plan with gaps stops here, with a message naming each gap.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (pool, logging) = crate::db::prepare_quietly(&settings.database)
            .await
            .context("preparing the database")?;
        crate::exhaust::at_start(&logging, settings.erasure.require_quiet_logging)?;
        let plan = checked_plan(&settings, &pool).await?;
        let signer = Signer::load(&pool, &settings.proof)
            .await
            .context("loading the signing key")?;
        let pinned = match settings.proof.trusted_keys.as_deref() {
            Some(source) if !source.trim().is_empty() => Some(
                KeySet::load(source)
                    .await
                    .context("loading proof.trusted_keys")?,
            ),
            _ => None,
        };
        if let Some(pinned) = &pinned
            && !pinned.contains(signer.id())
        {
            anyhow::bail!(
                "the signing key {} is not in proof.trusted_keys: receipts and seals it signs would not check \
                 against the keys you publish; add its public half there (`erasure receipt new-key` prints both), \
                 or configure a key that is",
                signer.id()
            );
        }
        let verifier = Verifier::new(pool.clone(), &plan);
        let recorder =
            crate::proof::residue::Recorder::new(pool.clone(), &plan, &settings.proof, logging);
        let publisher = Arc::new(Publisher::new(settings.amqp.clone()));
        let intake = Intake::new(
            pool.clone(),
            &plan,
            publisher,
            settings.erasure.grace_period,
        );
        let eraser = eraser(&settings, &pool, plan).await?;
        crate::metrics::handle();
        Ok(Self {
            settings,
            pool,
            eraser,
            intake,
            signer,
            pinned,
            verifier,
            residue: recorder,
        })
    }

    /// The HTTP state this application serves.
    pub fn api_state(&self) -> http::HttpState {
        http::state(
            self.pool.clone(),
            self.intake.clone(),
            self.eraser.clone(),
            self.signer.clone(),
            self.pinned.clone(),
            (
                self.settings.http.rate_limit_per_minute,
                self.settings.http.failed_keys_per_minute,
            ),
            self.settings.console.clone(),
        )
    }

    /// Runs `mode` until `shutdown`, serving HTTP on `listener` if given (the API in `All` and
    /// `Api`, only the operations routes in `Worker`). The outbox (outcome events and
    /// the relay of requests accepted over HTTP) runs in every mode. Returns false when the
    /// shutdown grace period ran out with erasures still in flight: the caller should exit
    /// at once, non-zero.
    pub async fn run(
        self,
        mode: Mode,
        listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> bool {
        let outbox = Outbox::new(
            self.pool.clone(),
            self.eraser.count_keys(),
            Duration::from_millis(self.settings.http.relay_after_ms),
        );
        let relay = tokio::spawn(
            outbox
                .clone()
                .run(self.settings.amqp.clone(), shutdown.clone()),
        );
        self.spawn_proof(&shutdown);
        let consuming = Arc::new(AtomicBool::new(false));
        let mut state = self.api_state();
        if mode != Mode::Api {
            state.consumer = Some(consuming.clone());
        }
        let router = match mode {
            Mode::All | Mode::Api => http::router(state),
            Mode::Worker => http::ops_router(state),
        };
        let http = listener.map(|l| {
            let settings = self.settings.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { http::serve(l, router, &settings, shutdown).await })
        });
        if mode != Mode::Api {
            tokio::spawn(
                self.eraser
                    .clone()
                    .keep_reading_statistics(crate::erase::READ_STATISTICS_EVERY, shutdown.clone()),
            );
            let worker = Worker {
                eraser: self.eraser.clone(),
                outbox,
                amqp: self.settings.amqp.clone(),
                consuming,
                settings: self.settings.worker.clone(),
            };
            if !worker.run(shutdown.clone()).await {
                return false;
            }
        }
        shutdown.cancelled().await;
        if let Some(server) = http {
            match server.await {
                Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
                Err(e) => tracing::error!(error = %e, "HTTP server task failed"),
                Ok(Ok(())) => {}
            }
        }
        // The outbox drains what the last erasures owe, briefly.
        if tokio::time::timeout(Duration::from_secs(10), relay)
            .await
            .is_err()
        {
            tracing::warn!(
                "the outbox did not finish in time; the next start publishes what is owed"
            );
        }
        self.intake.publisher().close().await;
        self.pool.close().await;
        true
    }
}

/// The configured plan, checked against the live schema behind `pool`, with its facts. A plan
/// with gaps is a [`crate::plan::PlanError`] naming each.
pub async fn checked_plan(settings: &Settings, pool: &PgPool) -> anyhow::Result<Plan> {
    let plan = Plan::load(settings.erasure.plan.as_deref())?;
    let plan = check::against_live_schema(plan, pool).await?;
    // What an erasure would leave behind: copies the plan must cover stop here; what only the
    // operator can act on is a warning.
    let (plan, residue) = crate::plan::residue::read(plan, pool).await?;
    if let Some(refusal) = residue.refusal() {
        return Err(refusal.into());
    }
    for warning in &residue.warnings {
        tracing::warn!("what an erasure leaves behind: {warning}");
    }
    Ok(plan)
}

/// The eraser of `plan` (as [`checked_plan`] returned it) on `pool`, with the keyed hash of
/// `erasure.source_id_key` or of the key the first migration generated. It only builds the
/// statements: nothing is written, and nothing starts (what `erasure preview` needs).
pub async fn eraser(settings: &Settings, pool: &PgPool, plan: Plan) -> anyhow::Result<Eraser> {
    let key = match &settings.erasure.source_id_key {
        Some(key) => key.expose().as_bytes().to_vec(),
        None => crate::db::instance_source_id_key(pool).await?,
    };
    Ok(Eraser::new(
        pool.clone(),
        plan,
        KeyedHash::new(&key),
        Limits {
            max_attempts: settings.worker.max_attempts,
            chunk_threshold: settings.erasure.chunk_threshold,
            chunk_rows: settings.erasure.chunk_rows,
            chunk_time: std::time::Duration::from_millis(settings.erasure.chunk_ms),
            grace_period: settings.erasure.grace_period,
            preview_timeout: std::time::Duration::from_millis(settings.erasure.preview_timeout_ms),
        },
    ))
}

impl Application {
    /// The background work of proof of erasure, in every mode: the check after commit of DONE
    /// deletions, and the seals over the audit log. Several processes may run both: a
    /// verifier skips the deletions another holds, and one sealer at a time works.
    fn spawn_proof(&self, shutdown: &CancellationToken) {
        let proof = &self.settings.proof;
        if self.signer.custody() == Custody::Database {
            tokio::spawn(warn_of_database_key(shutdown.clone()));
        }
        if proof.verify_every_ms > 0 {
            tokio::spawn(self.verifier.clone().run(
                Duration::from_millis(proof.verify_every_ms),
                shutdown.clone(),
            ));
        }
        if proof.residue_every_ms > 0 {
            tokio::spawn(self.residue.clone().run(
                Duration::from_millis(proof.residue_every_ms),
                shutdown.clone(),
            ));
        }
        let records = self.settings.records.clone();
        if records.keep_audit.0.is_some() || records.keep_deletions.0.is_some() {
            tokio::spawn(crate::proof::purge::keep_purging(
                self.pool.clone(),
                self.signer.clone(),
                records,
                shutdown.clone(),
            ));
        }
        if proof.seal_every_ms > 0 {
            tokio::spawn(crate::proof::seal::keep_sealing(
                self.pool.clone(),
                self.signer.clone(),
                Duration::from_millis(proof.seal_every_ms),
                Duration::from_millis(proof.unsealed_warn_ms),
                shutdown.clone(),
            ));
        }
    }
}

/// Without a configured signing key: a warning at start and every hour until `shutdown`, since
/// receipts and seals are then signed by a key the database holds.
async fn warn_of_database_key(shutdown: CancellationToken) {
    loop {
        tracing::warn!(
            "no signing key is configured: receipts and seals are signed by a key the database holds, \
             so whoever can read the database can sign them; configure proof.signing_key and pin its \
             public half in proof.trusted_keys (README, \"Proving an erasure\")"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
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
