//! `erasure ledger export` and `erasure ledger replay`: the ledger of final deletions kept
//! outside the database, and the drill that brings a restored backup back to what was erased
//! since (README, "Backups, suppression, cancel and a grace period").

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use uuid::Uuid;

use crate::config::Settings;
use crate::deletion::ledger::{self, LedgerLine};
use crate::deletion::{DeletionRow, DeletionStatus};
use crate::erase::{Eraser, Outcome};
use crate::request::{Channel, ErasureRequest};
use crate::startup::Application;

/// How far back from its last line an export extending a file looks again. A statement
/// records its completion time before it commits, so a deletion still committing when the last
/// export ran may have ended before that export's last line; looking back (longer than any
/// statement runs) finds it, and the ids the file holds are skipped.
pub const OVERLAP: chrono::Duration = chrono::Duration::seconds(300);

/// The namespace of the request ids a replay derives from the original ones (UUID v5).
const REPLAY_NAMESPACE: Uuid = Uuid::from_u128(0x5f0c_3c2e_8f4a_4b4e_9a57_2d7e_6b1d_0a11);

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Write every final deletion as one JSON line, oldest first. With --out, a file that
    /// exists is extended with what it does not hold yet.
    Export {
        /// Only deletions that ended at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// The ledger file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase again, through the erasure path (channel `replay`), every customer of a DONE line
    /// that exists again (after a backup was restored); print what was done per customer and a
    /// summary. A second replay erases nothing. Exit 1 if a customer could not be erased.
    Replay {
        /// A ledger file, as `erasure ledger export` writes it.
        file: PathBuf,
    },
}

pub async fn run(settings: Settings, command: LedgerCommand) -> anyhow::Result<ExitCode> {
    match command {
        LedgerCommand::Export { since, out } => export(&settings, since, out.as_deref()).await,
        LedgerCommand::Replay { file } => {
            let app = Application::build(settings).await?;
            let text = std::fs::File::open(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let summary = replay(
                &app.eraser,
                std::io::BufReader::new(text),
                &mut std::io::stdout(),
            )
            .await?;
            println!("{summary}");
            Ok(if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// `erasure ledger export`.
async fn export(
    settings: &Settings,
    since: Option<DateTime<Utc>>,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let pool = crate::db::prepare(&settings.database).await?;
    let (held, last) = match out {
        Some(path) if path.exists() => read_ledger(path)?,
        _ => (HashSet::new(), None),
    };
    // Extending a file starts a little before where it ends (the ids it holds are skipped).
    let resume = last.map(|at| at - OVERLAP);
    let from = match (since, resume) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let lines = ledger::final_deletions(&pool, from).await?;
    let new: Vec<&LedgerLine> = lines
        .iter()
        .filter(|line| !held.contains(&line.deletion_id))
        .collect();
    let mut sink: Box<dyn Write> = match out {
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    for line in &new {
        serde_json::to_writer(&mut sink, line)?;
        sink.write_all(b"\n")?;
    }
    sink.flush()?;
    if let Some(path) = out {
        eprintln!("{} deletions added to {}", new.len(), path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The deletion ids a ledger file holds, and the completion time of its last line.
fn read_ledger(path: &Path) -> anyhow::Result<(HashSet<String>, Option<DateTime<Utc>>)> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut ids = HashSet::new();
    let mut last = None;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: LedgerLine = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not a ledger line", path.display(), n + 1))?;
        last = DateTime::parse_from_rfc3339(&entry.completed_at)
            .ok()
            .map(|at| at.with_timezone(&Utc))
            .or(last);
        ids.insert(entry.deletion_id);
    }
    Ok((ids, last))
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub lines: usize,
    /// Customers erased again.
    pub erased: usize,
    /// Customers of DONE lines that do not exist: nothing to do.
    pub absent: usize,
    /// Lines that erased nothing to replay (FAILED, CANCELED, found erased already).
    pub skipped: usize,
    /// Customers that exist but could not be erased (a guard, an error, replayed before and
    /// back again), and lines that do not read.
    pub failed: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replayed {} lines: {} customers erased again, {} not present, {} lines with nothing to replay, {} failed",
            self.lines, self.erased, self.absent, self.skipped, self.failed
        )
    }
}

/// The request id a replay of request `original` uses: the same every time, so that a replay
/// of a replay is a duplicate, never a second erasure.
pub fn replay_request_id(original: Uuid) -> Uuid {
    Uuid::new_v5(&REPLAY_NAMESPACE, original.as_bytes())
}

/// Replays the ledger `lines`, writing a line per customer to `report`.
pub async fn replay(
    eraser: &Eraser,
    lines: impl BufRead,
    report: &mut impl Write,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    for (n, line) in lines.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        summary.lines += 1;
        let entry: LedgerLine = match serde_json::from_str(&line) {
            Ok(entry) => entry,
            Err(e) => {
                writeln!(report, "line {}: not a ledger line ({e})", n + 1)?;
                summary.failed += 1;
                continue;
            }
        };
        let key = match (&entry.related_object_id, entry.status, entry.already_erased) {
            (Some(key), DeletionStatus::Done, false) => key.clone(),
            _ => {
                summary.skipped += 1;
                continue;
            }
        };
        if eraser.find_customer(&key).await?.is_none() {
            writeln!(
                report,
                "{key}: not present (erased by {}), nothing to do",
                entry.deletion_id
            )?;
            summary.absent += 1;
            continue;
        }
        let request = ErasureRequest {
            request_id: replay_request_id(entry.request_id),
            customer_id: key.clone(),
            requested_by: "ledger-replay".into(),
            reason: Some(format!("replay of {} after a restore", entry.deletion_id)),
            requested_at: None,
        };
        let received = eraser.receive(request, Channel::Replay, Utc::now());
        match eraser.erase(&received).await {
            Ok(Outcome::Recorded(row)) if row.status == DeletionStatus::Done => {
                writeln!(
                    report,
                    "{key}: erased again as {} ({})",
                    row.id,
                    counts(&row)
                )?;
                summary.erased += 1;
            }
            Ok(Outcome::Recorded(row) | Outcome::Stopped(row)) => {
                writeln!(
                    report,
                    "{key}: not erased: {} {} ({})",
                    row.status,
                    row.error_key.map_or("", |k| k.as_str()),
                    row.error_message.as_deref().unwrap_or("")
                )?;
                summary.failed += 1;
            }
            Ok(Outcome::Duplicate(row)) => {
                writeln!(
                    report,
                    "{key}: replayed before as {} ({}), and back again since: erase it with a new request",
                    row.id, row.status
                )?;
                summary.failed += 1;
            }
            Ok(Outcome::Rejected { message, .. }) => {
                writeln!(report, "{key}: not erased: {message}")?;
                summary.failed += 1;
            }
            Err(e) => {
                writeln!(report, "{key}: not erased: {e}")?;
                summary.failed += 1;
            }
        }
    }
    Ok(summary)
}

/// `events 16, orders 3, ...`: the counts of an erasure, for the report.
fn counts(row: &DeletionRow) -> String {
    row.data_json
        .as_object()
        .map(|counts| {
            counts
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
