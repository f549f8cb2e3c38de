//! `erasure receipt ...` and `erasure audit ...`: what an auditor runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::Value;

use crate::config::Settings;
use crate::proof::receipt;
use crate::proof::seal;
use crate::proof::signing::{DATABASE_KEYS_ONLY, KeySet, Signer, Trust};

/// The exit code of a check that passed against the keys the database holds, none pinned: the
/// records agree with their own database's keys, which proves less than a pinned set would.
pub const UNPINNED: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt's signature against pinned keys (--key, or proof.trusted_keys); exit 1,
    /// saying why, when it fails; exit 3 when it checks only against the keys the database
    /// holds (none pinned).
    Verify {
        /// The receipt, as GET /v1/permanent-deletions/{id}/receipt answered it.
        file: PathBuf,
        /// The public keys: a JWK set file, or its http:// address, kept apart from the
        /// database checked (default: proof.trusted_keys, else the database's own keys).
        #[arg(long)]
        key: Option<String>,
        /// The deletion's audit rows with their seals (audit.json of its evidence pack), checked
        /// against the same keys, offline.
        #[arg(long)]
        audit: Option<PathBuf>,
    },
    /// Print a new signing key (for proof.signing_key or proof.signing_key_file), and its id.
    NewKey,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log against its seals and pinned keys; exit 1 naming the first row or
    /// seal that does not fit; exit 3 when it checks only against the keys the database holds.
    Verify {
        /// Check only the seals made at or after this time (RFC 3339), linked to the one before.
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// The public keys, as for `receipt verify`.
        #[arg(long)]
        key: Option<String>,
    },
}

pub async fn receipt(settings: &Settings, command: ReceiptCommand) -> anyhow::Result<ExitCode> {
    match command {
        ReceiptCommand::NewKey => {
            let signer = Signer::generate();
            println!("{}", signer.secret_base64());
            eprintln!(
                "key id {} (keep the key secret; set it as proof.signing_key or in proof.signing_key_file, \
                 and add its public half to proof.trusted_keys: {})",
                signer.id(),
                KeySet::of(&signer).to_jwks()
            );
            Ok(ExitCode::SUCCESS)
        }
        ReceiptCommand::Verify { file, key, audit } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let receipt: Value = match crate::proof::strict_json::parse(&text) {
                Ok(value) => value,
                Err(why) => {
                    eprintln!(
                        "receipt does not check: {} does not read as I-JSON: {why}",
                        file.display()
                    );
                    return Ok(ExitCode::from(1));
                }
            };
            let trust = trust(settings, key.as_deref()).await?;
            match receipt::check(&receipt, trust.keys()) {
                Ok(checked) => {
                    println!(
                        "receipt checks: deletion {} {}, signed by key {}",
                        checked.deletion_id, checked.status, checked.key_id
                    );
                    if let Some(audit) = audit {
                        let text = std::fs::read_to_string(&audit)
                            .with_context(|| format!("reading {}", audit.display()))?;
                        let evidence = match crate::proof::strict_json::parse(&text) {
                            Ok(value) => value,
                            Err(why) => {
                                eprintln!(
                                    "audit rows do not check: {} does not read as I-JSON: {why}",
                                    audit.display()
                                );
                                return Ok(ExitCode::from(1));
                            }
                        };
                        match seal::check_evidence(&evidence, trust.keys(), &checked.deletion_id) {
                            Ok(rows) => println!(
                                "audit rows check: {} rows listed by {} signed seals; {} rows not sealed yet when the pack was made",
                                rows.sealed, rows.seals, rows.unsealed
                            ),
                            Err(why) => {
                                eprintln!("audit rows do not check: {why}");
                                return Ok(ExitCode::from(1));
                            }
                        }
                    }
                    Ok(passed(&trust))
                }
                Err(why) => {
                    eprintln!("receipt does not check: {why}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

pub async fn audit(settings: &Settings, command: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify { since, key } = command;
    let pool = crate::db::prepare(&settings.database).await?;
    let trust = Trust::load(key.as_deref(), &settings.proof, Some(&pool)).await?;
    let report = seal::check_log(&pool, trust.keys(), since).await?;
    if let Some(problem) = report.problem {
        eprintln!("audit log does not check: {problem}");
        return Ok(ExitCode::from(1));
    }
    println!(
        "audit log checks: {} seals covering {} rows; {} rows not sealed yet",
        report.seals, report.rows, report.unsealed
    );
    for (seal, reason, rows) in &report.redactions {
        println!(
            "{rows} rows redacted on purpose after they were sealed, as seal {seal} records: {reason}"
        );
    }
    for (seal, reason, rows, through) in &report.purges {
        println!(
            "{rows} rows of seals 1 to {through} purged on purpose, as seal {seal} records: {reason}"
        );
    }
    if let Some(head) = report.head {
        println!(
            "last seal digest {head} (keep it elsewhere to show later that no seal was removed)"
        );
    }
    Ok(passed(&trust))
}

/// The keys to check against: `--key`, else `proof.trusted_keys`, else the database's.
pub async fn trust(settings: &Settings, key: Option<&str>) -> anyhow::Result<Trust> {
    if key.is_some() || settings.proof.trusted_keys.is_some() {
        return Trust::load(key, &settings.proof, None).await;
    }
    let pool = crate::db::prepare(&settings.database).await?;
    Trust::load(None, &settings.proof, Some(&pool)).await
}

/// The exit of a check that passed: 0 against pinned keys, [`UNPINNED`] (saying why) against
/// the database's own.
fn passed(trust: &Trust) -> ExitCode {
    if trust.is_pinned() {
        return ExitCode::SUCCESS;
    }
    eprintln!("warning: {DATABASE_KEYS_ONLY}");
    ExitCode::from(UNPINNED)
}
