//! `erasure` carries out GDPR "right to be forgotten" requests.
//!
//! A tour, in the order a request travels:
//! - [`request`] reads a request message and says precisely what is wrong with a bad one;
//! - [`broker`] declares the RabbitMQ topology and publishes requests and outcome events;
//! - [`worker`] consumes requests and hands each delivery to [`erase`];
//! - [`erase`] runs the [`plan`]'s generated SQL, which erases one customer and records the
//!   [`deletion`] object and its audit row in one statement;
//! - [`outbox`] publishes each outcome event at least once, from the deletions table;
//! - [`api`] takes requests over HTTP through [`intake`] (recorded, then published) and
//!   answers status queries; [`keys`] guards it; [`metrics`] counts what happens;
//! - [`startup`] wires it all together and [`config`] says how.
#![forbid(unsafe_code)]

pub mod api;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod config;
pub mod db;
pub mod deletion;
pub mod erase;
pub mod intake;
pub mod keyed_hash;
pub mod keys;
pub mod metrics;
pub mod outbox;
pub mod plan;
pub mod request;
pub mod roundtrip;
pub mod startup;
pub mod telemetry;
pub mod worker;
