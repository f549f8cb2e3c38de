//! `erasure receipt ...` and `erasure audit ...`: what an auditor runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::Value;

use crate::config::Settings;
use crate::proof::receipt;
use crate::proof::seal;
use crate::proof::signing::{KeySet, Signer};

#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt's signature, offline with --key; exit 1, saying why, when it fails.
    Verify {
        /// The receipt, as GET /v1/permanent-deletions/{id}/receipt answered it.
        file: PathBuf,
        /// The public keys: a JWK set file, or its http:// address (GET /v1/receipt-keys).
        /// Without it, the keys this installation's database publishes.
        #[arg(long)]
        key: Option<String>,
    },
    /// Print a new signing key (for proof.signing_key or proof.signing_key_file), and its id.
    NewKey,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log against its seals; exit 1 naming the first row or seal that does
    /// not fit.
    Verify {
        /// Check only the seals made at or after this time (RFC 3339), linked to the one before.
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// The public keys, as for `receipt verify` (default: the database's).
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
                "key id {} (keep the key secret; set it as proof.signing_key or in proof.signing_key_file)",
                signer.id()
            );
            Ok(ExitCode::SUCCESS)
        }
        ReceiptCommand::Verify { file, key } => {
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
            let keys = keys(settings, key.as_deref()).await?;
            match receipt::check(&receipt, &keys) {
                Ok(checked) => {
                    println!(
                        "receipt checks: deletion {} {}, signed by key {}",
                        checked.deletion_id, checked.status, checked.key_id
                    );
                    Ok(ExitCode::SUCCESS)
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
    let keys = keys(settings, key.as_deref()).await?;
    let pool = crate::db::prepare(&settings.database).await?;
    let report = seal::check_log(&pool, &keys, since).await?;
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
    if let Some(head) = report.head {
        println!(
            "last seal digest {head} (keep it elsewhere to show later that no seal was removed)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The key set from a file or an http:// address, or else the database's.
pub async fn keys(settings: &Settings, source: Option<&str>) -> anyhow::Result<KeySet> {
    let jwks: Value = match source {
        None => {
            let pool = crate::db::prepare(&settings.database).await?;
            return Ok(KeySet::published(&pool).await?);
        }
        Some(url) if url.starts_with("http://") => reqwest::get(url)
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("fetching the key set at {url}"))?
            .json()
            .await
            .with_context(|| format!("reading the key set at {url}"))?,
        Some(url) if url.starts_with("https://") => anyhow::bail!(
            "fetch the key set first (curl -fsSo keys.json {url}) and give the file: this command reads keys over plain HTTP or from a file"
        ),
        Some(path) => {
            let text = std::fs::read_to_string(Path::new(path))
                .with_context(|| format!("reading the key set {path}"))?;
            serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?
        }
    };
    KeySet::from_jwks(&jwks).map_err(|why| anyhow::anyhow!("the key set does not read: {why}"))
}
