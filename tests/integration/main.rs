//! Integration tests against the machine's real PostgreSQL and RabbitMQ.

mod batches;
mod chunked;
mod cli;
mod console;
mod erasure_outcomes;
mod exhaust;
mod fault_proxy;
mod faults;
mod hardening;
mod helpers;
mod http_api;
mod identity;
mod invalid_messages;
mod isolation;
mod ledger;
mod lifecycle;
mod migrations;
mod openapi;
mod plan_agreement;
mod plan_check;
mod plan_language;
mod proof;
mod schemas;
mod shared_rows;
mod size_probe;
mod trust;
