//! Proof of erasure, for auditors, regulators and data subjects who ask "prove it was erased":
//! - [`verification`]: after a DONE erasure commits, a read-only check runs the plan's own
//!   paths for its customer and records what it found on the deletion;
//! - [`signing`]: the Ed25519 key receipts and seals are signed with, and the public keys
//!   (every key ever used) as a JWK set;
//! - [`receipt`]: a final deletion as a signed receipt, and the check of one, offline;
//! - [`residue`]: after the check, what the erasure left behind (WAL, backups, freed pages,
//!   views, statistics, change streams...), cleared where the service can, recorded on the
//!   deletion and its receipt;
//! - [`signed`]: the signed JSON objects receipts and ledger lines are;
//! - [`seal`]: seals over the audit log, a signed chain that shows any later edit, deletion or
//!   reordering of its rows, and the check of the whole log;
//! - [`strict_json`]: signed documents read as RFC 8785 needs them (I-JSON); what is hashed and
//!   signed is their canonical JSON ([`crate::canonical`]).

pub mod purge;
pub mod receipt;
pub mod residue;
pub mod seal;
pub mod signed;
pub mod signing;
pub mod strict_json;
pub mod verification;
