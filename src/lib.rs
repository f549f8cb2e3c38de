//! `erasure` carries out GDPR "right to be forgotten" requests.
//!
//! A tour, in the order a request travels:
//! - [`request`] reads a request message (one parser for the queue, the HTTP API and the
//!   command line) and says precisely what is wrong with a bad one; a valid one becomes a
//!   [`request::Received`];
//! - [`broker`] declares the RabbitMQ topology, publishes requests and outcome events, and
//!   reconnects with backoff;
//! - [`worker`] consumes requests: [`worker::handle_delivery`] is the one step per delivery;
//! - [`erase`] carries one out: a worker slot, the plan's erasure statement, the fresh look when
//!   it found nothing, chunks for huge customers, failures; its [`erase::EraseError`] says
//!   whether to retry, hold or give up;
//! - [`plan`] is the erasure plan (data, checked against the live schema) and the SQL made
//!   from it;
//! - [`deletion`] is the deletion object and the only code that writes `erasure.deletions` and
//!   `erasure.audit_log`;
//! - [`proof`] checks each DONE erasure after its commit, signs receipts, and seals the audit
//!   log so that tampering shows;
//! - [`outbox`] publishes each outcome event at least once, and relays requests accepted over
//!   HTTP that the broker has not confirmed;
//! - [`api`] takes requests over HTTP through [`intake`] (recorded, then published) and answers
//!   status queries; [`keys`] guards it; [`metrics`] counts what happens;
//! - [`console`] is the web console for compliance staff, beside the API;
//! - [`identity`] is the one rule for whom a request names, and [`keyed_hash`] stands in for
//!   identifiers the service must not keep in clear;
//! - [`db`] connects, migrates and classifies database errors;
//! - [`startup`] wires it all together, [`config`] says how, [`cli`] is the command line and
//!   [`telemetry`] the logs; [`text_enum`] makes the enums stored as words.
#![forbid(unsafe_code)]

pub mod text_enum;

pub mod api;
pub mod broker;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod deletion;
pub mod erase;
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
pub mod telemetry;
pub mod worker;
