//! `erasure` carries out GDPR "right to be forgotten" requests.
//!
//! The layers, top to bottom: a module uses only modules on its own layer's right or below it,
//! never one above (no circles, no arrow back up).
//!
//! 1. [`cli`]: the command line (`erasure run`, `plan`, `ledger`, ...), and [`startup`], which
//!    wires an application together from [`config`].
//! 2. The ways in: [`worker`] consumes the queue ([`worker::handle_delivery`] is the one step
//!    per delivery); [`http`] serves the API, the console and the operations routes.
//! 3. What they do: [`canary`] plants a synthetic customer, erases it and looks for what is
//!    left of it; [`erase`] carries a request out (a worker slot, the plan's erasure
//!    statement, the fresh look when it found nothing, chunks for huge customers, failures; its
//!    [`erase::EraseError`] says whether to retry, hold or give up); [`intake`] records a
//!    request accepted over HTTP, then publishes it; [`proof`] checks each DONE erasure after
//!    its commit, signs receipts, records what each erasure left behind, and seals the audit
//!    log so that tampering shows.
//! 4. [`db`] connects, migrates and classifies database errors; [`exhaust`] keeps what the
//!    worker's sessions send out of the server's log.
//! 5. [`plan`]: the erasure plan (data, checked against the live schema) and the SQL made from
//!    it; [`outbox`] publishes each outcome event at least once and relays requests the broker
//!    has not confirmed; [`keys`] are the API keys; [`metrics`] counts what happens.
//! 6. [`deletion`]: the deletion object, and the only code that writes the service's records
//!    (`erasure.deletions`, the audit log, what a deletion owes, the claims).
//! 7. [`request`]: a request message read by one parser for every way in, and a valid one as
//!    [`request::Received`].
//! 8. [`broker`] (the RabbitMQ topology, publishing with confirms, reconnecting) and
//!    [`identity`] (the one rule for whom a request names, and the keyed hashes that stand in
//!    for identifiers).
//! 9. The ground floor, words every layer shares: [`subject_key`] (the subject's key types and
//!    lookups), [`keyed_hash`], [`canonical`] (RFC 8785 JSON), [`config`], [`text_enum`] (enums
//!    stored as words) and [`telemetry`] (the logs).
//!
//! Where to add things: README, "Where to add things".
#![forbid(unsafe_code)]

pub mod text_enum;

pub mod broker;
pub mod canary;
pub mod canonical;
pub mod cli;
pub mod config;
pub mod db;
pub mod deletion;
pub mod erase;
pub mod exhaust;
pub mod http;
pub mod identity;
pub mod intake;
pub mod keyed_hash;
pub mod keys;
pub mod metrics;
pub mod outbox;
pub mod plan;
pub mod proof;
pub mod request;
pub mod startup;
pub mod subject_key;
pub mod telemetry;
pub mod worker;
