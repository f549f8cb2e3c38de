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
use serde_json::Value;

use crate::erase::{Eraser, Outcome};
use crate::proof::signed;
use crate::proof::signing::{KeySet, Signer};
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
    /// Write every final deletion as one signed JSON line, oldest first. With --out, a file
    /// that exists is extended with what it does not hold yet.
    Export {
        /// Only deletions that ended at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// The ledger file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase again, through the erasure path (channel `replay`, by key only), every customer of
    /// a DONE line that exists again (after a backup was restored); print what was done per
    /// line and a summary. Lines that do not verify or do not read are refused, reported with
    /// their number, and the rest replayed. A second replay erases nothing. Exit 1 if a line was
    /// refused or a customer could not be erased.
    Replay {
        /// A ledger file, as `erasure ledger export` writes it.
        file: PathBuf,
        /// The keys that check the lines' signatures: a JWK set file, or its http:// address
        /// (default: proof.trusted_keys, else the keys the database holds).
        #[arg(long)]
        key: Option<String>,
        /// Accept lines without a signature (ledgers exported before lines were signed).
        #[arg(long)]
        trust_unsigned: bool,
    },
}

pub async fn run(settings: Settings, command: LedgerCommand) -> anyhow::Result<ExitCode> {
    match command {
        LedgerCommand::Export { since, out } => export(&settings, since, out.as_deref()).await,
        LedgerCommand::Replay {
            file,
            key,
            trust_unsigned,
        } => {
            let trust = super::proof::trust(&settings, key.as_deref()).await?;
            if !trust.is_pinned() {
                eprintln!(
                    "warning: ledger lines {}",
                    crate::proof::signing::DATABASE_KEYS_ONLY
                );
            }
            let app = Application::build(settings).await?;
            let text = std::fs::File::open(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let trust = Trust {
                keys: trust.keys(),
                unsigned: trust_unsigned,
            };
            let summary = replay(
                &app.eraser,
                &trust,
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

/// Final deletions the export reads at a time.
const EXPORT_PAGE: i64 = 1000;

/// `erasure ledger export`.
async fn export(
    settings: &Settings,
    since: Option<DateTime<Utc>>,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let pool = crate::db::prepare(&settings.database).await?;
    let signer = Signer::load(&pool, &settings.proof)
        .await
        .context("loading the signing key")?;
    let (held, last) = match out {
        Some(path) if path.exists() => read_ledger(path)?,
        _ => (HashSet::new(), None),
    };
    // Extending a file starts a little before its last deletion ended, by this database's
    // clock (never the file's, which may be ahead of it); the ids it holds are skipped. A last
    // deletion this database does not know (a file from elsewhere) starts from the beginning.
    let resume = match &last {
        Some(id) => ledger::completed_at(&pool, id)
            .await?
            .map(|at| at - OVERLAP),
        None => None,
    };
    let from = match (since, resume) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
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
    // A page at a time, so that memory stays bounded however many deletions there are.
    let mut after = None;
    let mut added = 0usize;
    loop {
        let lines = ledger::final_deletions_after(&pool, from, after.take(), EXPORT_PAGE).await?;
        let Some(last) = lines.last() else { break };
        // Written with microseconds, as PostgreSQL keeps it: the exact key of the last row.
        let completed = DateTime::parse_from_rfc3339(&last.completed_at)?.with_timezone(&Utc);
        after = Some((completed, last.deletion_id.clone()));
        for line in lines.iter().filter(|l| !held.contains(&l.deletion_id)) {
            let Value::Object(members) = serde_json::to_value(line)? else {
                unreachable!("a ledger line is an object")
            };
            serde_json::to_writer(&mut sink, &signed::sign(members, &signer))?;
            sink.write_all(b"\n")?;
            added += 1;
        }
        if (lines.len() as i64) < EXPORT_PAGE {
            break;
        }
    }
    sink.flush()?;
    if let Some(path) = out {
        eprintln!("{added} deletions added to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The deletion ids a ledger file holds, and the id of its last line. Lines that do not read
/// are passed over (a replay reports them).
fn read_ledger(path: &Path) -> anyhow::Result<(HashSet<String>, Option<String>)> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut ids = HashSet::new();
    let mut last = None;
    while let Some(line) = read_line(&mut reader)? {
        let Ok(text) = line else { continue };
        if let Ok(Value::Object(members)) = serde_json::from_str::<Value>(&text)
            && let Some(id) = members.get("deletion_id").and_then(Value::as_str)
        {
            ids.insert(id.to_owned());
            last = Some(id.to_owned());
        }
    }
    Ok((ids, last))
}

/// The longest ledger line read: a line is about 600 bytes; anything past this is not one.
pub const MAX_LINE: usize = 64 * 1024;

/// The next line of `reader` (without its newline): `Ok(text)`, or `Err(why)` for a line that
/// is not text or is longer than [`MAX_LINE`] (read past, never held whole); `None` at the end.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<Option<Result<String, String>>> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        any = true;
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (&available[..at], Some(at + 1)),
            None => (available, None),
        };
        if !too_long && line.len() + chunk.len() <= MAX_LINE {
            line.extend_from_slice(chunk);
        } else {
            too_long = true;
            line.clear();
        }
        let consumed = done.unwrap_or(available.len());
        reader.consume(consumed);
        if done.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if too_long {
        return Ok(Some(Err(format!(
            "longer than {} KiB: not a ledger line",
            MAX_LINE / 1024
        ))));
    }
    Ok(Some(String::from_utf8(line).map_err(|_| {
        "not UTF-8 text: not a ledger line".to_string()
    })))
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
    /// Lines refused (they do not verify or do not read, or name a customer whose lookup
    /// values are another person's), and customers that exist but could not be erased (a
    /// guard, an error, replayed before and back again).
    pub failed: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replayed {} lines: {} customers erased again, {} not present, {} lines with nothing to replay, {} failed or refused",
            self.lines, self.erased, self.absent, self.skipped, self.failed
        )
    }
}

/// What a replay trusts a ledger line by.
pub struct Trust<'a> {
    /// The keys whose signatures it accepts.
    pub keys: &'a KeySet,
    /// Whether a line without a signature is accepted.
    pub unsigned: bool,
}

/// The request id a replay of request `original` uses: the same every time, so that a replay
/// of a replay is a duplicate, never a second erasure.
pub fn replay_request_id(original: Uuid) -> Uuid {
    Uuid::new_v5(&REPLAY_NAMESPACE, original.as_bytes())
}

/// A ledger line that verifies and reads, or why not.
fn verified(text: &str, trust: &Trust<'_>) -> Result<LedgerLine, String> {
    let value = crate::proof::strict_json::parse(text)
        .map_err(|why| format!("not a ledger line ({why})"))?;
    let Value::Object(mut members) = value else {
        return Err("not a ledger line (not a JSON object)".into());
    };
    if members.contains_key("signature") {
        signed::check(&members, trust.keys, "line")
            .map_err(|why| format!("does not verify: {why}"))?;
    } else if !trust.unsigned {
        return Err(
            "not signed (give --trust-unsigned for a ledger exported before lines were signed)"
                .into(),
        );
    }
    members.remove("signature");
    members.remove("key_id");
    serde_json::from_value(Value::Object(members)).map_err(|e| format!("not a ledger line ({e})"))
}

/// Replays the ledger `lines`, each refused unless it verifies with `trust`, writing a line per
/// ledger line to `report`.
pub async fn replay(
    eraser: &Eraser,
    trust: &Trust<'_>,
    mut lines: impl BufRead,
    report: &mut impl Write,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut n = 0;
    while let Some(line) = read_line(&mut lines)? {
        n += 1;
        let text = match line {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => text,
            Err(why) => {
                summary.lines += 1;
                summary.failed += 1;
                writeln!(report, "line {n}: refused: {why}")?;
                continue;
            }
        };
        summary.lines += 1;
        let entry = match verified(&text, trust) {
            Ok(entry) => entry,
            Err(why) => {
                writeln!(report, "line {n}: refused: {why}")?;
                summary.failed += 1;
                continue;
            }
        };
        match replay_line(eraser, &entry, n, report).await {
            Ok(Replayed::Erased) => summary.erased += 1,
            Ok(Replayed::Absent) => summary.absent += 1,
            Ok(Replayed::Skipped) => summary.skipped += 1,
            Ok(Replayed::Failed) => summary.failed += 1,
            Err(e) => {
                writeln!(report, "line {n}: not erased: {e}")?;
                summary.failed += 1;
            }
        }
    }
    Ok(summary)
}

enum Replayed {
    Erased,
    Absent,
    Skipped,
    Failed,
}

/// Replays line `n`, `entry`, which verified: its customer erased again, by key only, if it
/// exists and its lookup values are the erased customer's.
async fn replay_line(
    eraser: &Eraser,
    entry: &LedgerLine,
    n: usize,
    report: &mut impl Write,
) -> anyhow::Result<Replayed> {
    let key = match (&entry.related_object_id, entry.status, entry.already_erased) {
        (Some(key), DeletionStatus::Done, false) => key.clone(),
        (_, status, already) => {
            let what = if already {
                "found erased already"
            } else {
                status.as_str()
            };
            writeln!(
                report,
                "line {n}: {} ended {what}: nothing to replay",
                entry.deletion_id
            )?;
            return Ok(Replayed::Skipped);
        }
    };
    if let Err(why) = crate::request::check_identifier("related_object_id", &key) {
        writeln!(report, "line {n}: refused: {why}")?;
        return Ok(Replayed::Failed);
    }
    let Some(digests) = eraser.lookup_digests_of(&key).await? else {
        writeln!(
            report,
            "line {n}: {key}: not present (erased by {}), nothing to do",
            entry.deletion_id
        )?;
        return Ok(Replayed::Absent);
    };
    // The customer found under the key must be the one erased: when the line kept lookup
    // values and the customer has some, they share one at least.
    let kept: Vec<&str> = entry.lookup_digests.iter().map(String::as_str).collect();
    let has: Vec<String> = digests.iter().map(|d| ledger::hex(d)).collect();
    if !kept.is_empty() && !has.is_empty() && !has.iter().any(|h| kept.contains(&h.as_str())) {
        writeln!(
            report,
            "line {n}: {key}: refused: the customer with this key has none of the lookup values the erased one had \
             (another person has the key now); not erased"
        )?;
        return Ok(Replayed::Failed);
    }
    let request = ErasureRequest {
        request_id: replay_request_id(entry.request_id),
        customer_id: key.clone(),
        requested_by: "ledger-replay".into(),
        reason: Some(format!("replay of {} after a restore", entry.deletion_id)),
        requested_at: None,
        identifier_type: Some("key".into()),
    };
    let received = eraser
        .receive(request, Channel::Replay, Utc::now())
        .map_err(|invalid| anyhow::anyhow!(invalid.message))?;
    let replayed = match eraser.erase(&received).await {
        Ok(Outcome::Recorded(row)) if row.status == DeletionStatus::Done => {
            writeln!(
                report,
                "line {n}: {key}: erased again as {} ({})",
                row.id,
                counts(&row)
            )?;
            Replayed::Erased
        }
        Ok(Outcome::Recorded(row) | Outcome::Stopped(row)) => {
            writeln!(
                report,
                "line {n}: {key}: not erased: {} {} ({})",
                row.status,
                row.error_key.map_or("", |k| k.as_str()),
                row.error_message.as_deref().unwrap_or("")
            )?;
            Replayed::Failed
        }
        Ok(Outcome::Duplicate(row)) => {
            writeln!(
                report,
                "line {n}: {key}: replayed before as {} ({}), and back again since: erase it with a new request",
                row.id, row.status
            )?;
            Replayed::Failed
        }
        Ok(Outcome::Rejected { message, .. }) => {
            writeln!(report, "line {n}: {key}: not erased: {message}")?;
            Replayed::Failed
        }
        Err(e) => {
            writeln!(report, "line {n}: {key}: not erased: {e}")?;
            Replayed::Failed
        }
    };
    Ok(replayed)
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
