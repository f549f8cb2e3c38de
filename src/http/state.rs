//! What every handler of the API and the console may use, and the steps they share: a deletion
//! as the deletion object they show, and a request submitted over HTTP.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Map, Value};
use sqlx::PgPool;

use super::rate_limit::RateLimiter;
use crate::broker::Publisher;
use crate::deletion::{DeletionObject, DeletionRow};
use crate::erase::Eraser;
use crate::identity::Identity;
use crate::intake::{Intake, Submission, SubmitError, Submitted};
use crate::proof::signing::{KeySet, Signer};
use crate::request::{self, Channel, Received};

/// What every handler may use.
#[derive(Clone)]
pub struct HttpState {
    pub pool: PgPool,
    pub intake: Intake,
    /// For previews: the erasure, run and rolled back.
    pub eraser: Eraser,
    pub publisher: Arc<Publisher>,
    pub identity: Identity,
    pub count_keys: Arc<[String]>,
    pub limiter: Arc<RateLimiter>,
    /// Failed key attempts a client address may make per minute (API and sign-in).
    pub failed_keys_per_minute: u32,
    pub metrics: PrometheusHandle,
    /// Signs receipts.
    pub signer: Signer,
    /// The public keys pinned by `proof.trusted_keys`: what `GET /v1/receipt-keys` publishes.
    pub pinned: Option<KeySet>,
    pub console: crate::config::ConsoleSettings,
    /// In a process that consumes: whether the consumer is connected (readiness needs it).
    pub consumer: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl HttpState {
    /// `row` as the deletion object the API answers and the console shows, its counts in the
    /// plan's order.
    pub fn deletion(&self, row: &DeletionRow) -> DeletionObject {
        row.to_object(&self.count_keys)
    }

    /// Submits the request whose fields a caller gave (the API's body and path, a console
    /// form), received at `received_at`: read by the one parser of requests (so that the API,
    /// the console, the queue and the command line accept exactly the same requests), then
    /// recorded and published by the intake, as `submission` says (the API key that submits it).
    pub async fn submit(
        &self,
        fields: Map<String, Value>,
        received_at: DateTime<Utc>,
        submission: Submission<'_>,
    ) -> Result<Submitted, Refused> {
        let request = request::from_fields(fields, received_at)
            .map_err(|invalid| Refused::Invalid(invalid.message))?;
        let received = Received::new(request, Channel::Http, received_at, &self.identity)
            .map_err(|invalid| Refused::Invalid(invalid.message))?;
        self.intake
            .submit(&received, submission)
            .await
            .map_err(|e| match e {
                SubmitError::PastDue(invalid) => Refused::Invalid(invalid.message),
                SubmitError::ReusedForAnotherCustomer => Refused::ReusedForAnotherCustomer,
                SubmitError::RetriedAlready => Refused::RetriedAlready,
                SubmitError::Database(e) => Refused::Database(e),
            })
    }
}

/// Why a request submitted over HTTP was not recorded.
#[derive(Debug)]
pub enum Refused {
    /// It is not a valid request (the reason, naming fields, never values).
    Invalid(String),
    /// Its request id was taken by a request for another customer.
    ReusedForAnotherCustomer,
    /// It retries a deletion that was retried already.
    RetriedAlready,
    Database(sqlx::Error),
}

/// Builds the state from the parts the application made.
pub fn state(
    pool: PgPool,
    intake: Intake,
    eraser: Eraser,
    signer: Signer,
    pinned: Option<KeySet>,
    limits: (u32, u32),
    console: crate::config::ConsoleSettings,
) -> HttpState {
    let (rate_limit_per_minute, failed_keys_per_minute) = limits;
    let limiter = Arc::new(RateLimiter::new(pool.clone(), rate_limit_per_minute));
    HttpState {
        publisher: intake.publisher(),
        pool,
        intake,
        identity: eraser.identity().clone(),
        count_keys: eraser.count_keys().into(),
        eraser,
        limiter,
        failed_keys_per_minute,
        metrics: crate::metrics::handle(),
        signer,
        pinned,
        console,
        consumer: None,
    }
}
