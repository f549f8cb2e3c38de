//! The `erasure` command line; [`plan`] holds the commands that read the plan and the live
//! schema and change nothing, [`proof`] those that check receipts and the audit log,
//! [`canary`] the canary and the drift gate.

mod canary;
mod ledger;
mod plan;
mod proof;

pub use ledger::{Summary as ReplaySummary, replay, replay_request_id};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker;
use crate::config::Settings;
use crate::deletion;
use crate::keys::{self, KeyError};
use crate::plan::Plan;
use crate::request::{self, ErasureRequest};
use crate::startup::{Application, Mode, shutdown_signal};

#[derive(Debug, Parser)]
#[command(
    name = "erasure",
    version,
    about = "Carries out GDPR right-to-be-forgotten requests"
)]
pub struct Cli {
    /// Directory holding default.toml and $ERASURE_ENV.toml.
    #[arg(
        long,
        global = true,
        env = "ERASURE_CONFIG_DIR",
        default_value = "config"
    )]
    pub config_dir: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate, declare the broker topology, and run the consumer and the HTTP API until
    /// SIGTERM/SIGINT (default).
    Run,
    /// Run only the queue consumer (with worker.ops_addr set, it serves /healthz, /readyz and
    /// /metrics there).
    Worker,
    /// Run only the HTTP API.
    Api,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Apply migrations and exit.
    Migrate,
    /// Print the erasure plan and check it against the live schema (exit 2 for a plan that
    /// cannot be used); creates and changes nothing.
    Plan {
        /// Print the generated SQL instead of the summary.
        #[arg(long, conflicts_with = "draft")]
        sql: bool,
        /// Print a starting plan drafted from the live schema instead.
        #[arg(long)]
        draft: bool,
        /// With --draft: the customer table, `schema.table` (default: the plan's subject).
        #[arg(long, requires = "draft")]
        subject: Option<String>,
        /// Count as gaps (exit 2), not warnings: a column the plan filters on that has no
        /// index, and a column that looks personal that the plan neither reaches nor exempts.
        #[arg(long, conflicts_with = "draft")]
        strict: bool,
    },
    /// Plant a synthetic customer on every path of the plan, erase it, and look for its
    /// values everywhere; exit 0 only when none is found, 1 naming where one is.
    Canary {
        /// The server's log file, to look in too (default: the logging collector's file,
        /// where the role may read it).
        #[arg(long)]
        server_log: Option<PathBuf>,
    },
    /// Show what erasing a customer would record (counted, reading only), and the guard that
    /// would refuse it; exit 1 if no customer has the identifier. Needs `erasure migrate` run
    /// first; migrates nothing.
    Preview {
        /// The customer's key or lookup value.
        customer: String,
    },
    /// Publish one erasure request and print its request id.
    Enqueue {
        /// The customer's id or source id.
        customer: String,
        /// Who asked (a system or a person's role, not the data subject).
        #[arg(long)]
        requested_by: String,
        #[arg(long)]
        reason: Option<String>,
        /// The idempotency key; a new one when absent.
        #[arg(long)]
        request_id: Option<Uuid>,
        /// Which identifier CUSTOMER is: `key`, or a lookup's column (default: whichever it
        /// names; a key wins, and an identifier that names several customers is refused).
        #[arg(long)]
        identifier_type: Option<String>,
    },
    /// Print a deletion object by its del_ id or request id.
    Status { id: String },
    /// Check a receipt, or make a signing key.
    Receipt {
        #[command(subcommand)]
        command: proof::ReceiptCommand,
    },
    /// The ledger of final deletions, kept outside the database: export it, replay it after a
    /// backup was restored.
    Ledger {
        #[command(subcommand)]
        command: ledger::LedgerCommand,
    },
    /// Check the audit log against its seals.
    Audit {
        #[command(subcommand)]
        command: proof::AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; the last line printed is the key itself, shown this once.
    Create {
        #[arg(long)]
        name: String,
        /// The key may only read (GET); writes answer 403.
        #[arg(long)]
        read_only: bool,
    },
    /// List the keys (never their secrets).
    List,
    /// Revoke the live key with this id or name.
    Revoke { id_or_name: String },
}

/// An error and its causes, each said once: a cause whose text the message before it already
/// includes (as sqlx's errors include their database error's) is left out.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Runs the command `cli` names; the exit code says how it ended.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&cli.config_dir).context("reading the configuration")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => serve(settings, Mode::All).await,
        Command::Worker => serve(settings, Mode::Worker).await,
        Command::Api => serve(settings, Mode::Api).await,
        Command::Keys { command } => {
            let pool = crate::db::prepare(&settings.database).await?;
            match command {
                KeysCommand::Create { name, read_only } => {
                    keys_create(&pool, &name, read_only).await
                }
                KeysCommand::List => keys_list(&pool).await,
                KeysCommand::Revoke { id_or_name } => keys_revoke(&pool, &id_or_name).await,
            }
        }
        Command::Migrate => {
            crate::db::prepare(&settings.database).await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            sql,
            draft: false,
            subject: _,
            strict,
        } => plan::exit_2_for_unusable(plan::plan(&settings, sql, strict).await),
        Command::Plan {
            draft: true,
            subject,
            ..
        } => plan::exit_2_for_unusable(plan::draft(&settings, subject).await),
        Command::Preview { customer } => {
            plan::exit_2_for_unusable(plan::preview(&settings, &customer).await)
        }
        Command::Canary { server_log } => canary::run(settings, server_log).await,
        Command::Enqueue {
            customer,
            requested_by,
            reason,
            request_id,
            identifier_type,
        } => {
            let request = ErasureRequest {
                request_id: request_id.unwrap_or_else(Uuid::new_v4),
                customer_id: customer,
                requested_by,
                reason,
                requested_at: None,
                identifier_type,
            };
            enqueue(&settings, &request).await
        }
        Command::Status { id } => status(&settings, &id).await,
        Command::Receipt { command } => proof::receipt(&settings, command).await,
        Command::Audit { command } => proof::audit(&settings, command).await,
        Command::Ledger { command } => ledger::run(settings, command).await,
    }
}

/// `erasure run`, `worker` and `api`: serves until SIGTERM or SIGINT. Exit 3 when the grace
/// period ran out with erasures unfinished.
async fn serve(settings: Settings, mode: Mode) -> anyhow::Result<ExitCode> {
    // A worker alone leaves the API's address free for `erasure api` beside it, and serves its
    // operations routes only where told to.
    let addr = match mode {
        Mode::Worker => settings.worker.ops_addr,
        Mode::All | Mode::Api => Some(settings.http.addr),
    };
    let listener = match addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?,
        ),
        None => None,
    };
    let app = Application::build(settings).await?;
    let shutdown = CancellationToken::new();
    let signal = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            shutdown.cancel();
        })
    };
    let clean = app.run(mode, listener, shutdown).await;
    signal.abort();
    if clean {
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    } else {
        tracing::error!("stopped with erasures unfinished; they roll back and are redelivered");
        Ok(ExitCode::from(3))
    }
}

/// `erasure keys create`: the key is the last line printed (exit 2 for a bad or taken name).
async fn keys_create(pool: &PgPool, name: &str, read_only: bool) -> anyhow::Result<ExitCode> {
    match keys::create(pool, name, read_only).await {
        Ok(key) => {
            let access = if read_only { "read-only" } else { "read-write" };
            println!("created {access} key {name:?}; it is shown only this once:");
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (KeyError::InvalidName | KeyError::NameTaken(_))) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}

/// `erasure keys list`: one line a key, never its secret.
async fn keys_list(pool: &PgPool) -> anyhow::Result<ExitCode> {
    for key in keys::list(pool).await? {
        let access = if key.read_only {
            "read-only"
        } else {
            "read-write"
        };
        let state = match key.revoked_at {
            Some(at) => format!("revoked {}", at.to_rfc3339()),
            None => "live".into(),
        };
        println!(
            "{}\t{}\t{access}\tcreated {}\t{state}",
            key.id,
            key.name,
            key.created_at.to_rfc3339()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `erasure keys revoke`: exit 1 when no live key has the id or name.
async fn keys_revoke(pool: &PgPool, id_or_name: &str) -> anyhow::Result<ExitCode> {
    if keys::revoke(pool, id_or_name).await? {
        println!("revoked");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: no live key has the id or name {id_or_name:?}");
        Ok(ExitCode::from(1))
    }
}

/// `erasure enqueue`: publishes one request (exit 2, publishing nothing, for one the worker
/// would refuse) and prints its request id.
async fn enqueue(settings: &Settings, request: &ErasureRequest) -> anyhow::Result<ExitCode> {
    let request_id = request.request_id;
    let body = request.to_message();
    if let Err(invalid) = request::parse(&body, chrono::Utc::now()) {
        eprintln!("error: not a valid request: {}", invalid.message);
        return Ok(ExitCode::from(2));
    }
    broker::publish_request_once(&settings.amqp, &request_id.to_string(), &body).await?;
    println!("{request_id}");
    Ok(ExitCode::SUCCESS)
}

/// `erasure status ID`: the deletion object as JSON; exit 1 if unknown.
async fn status(settings: &Settings, id: &str) -> anyhow::Result<ExitCode> {
    let plan = Plan::load(settings.erasure.plan.as_deref())?;
    let pool = crate::db::prepare(&settings.database).await?;
    match deletion::find(&pool, id).await? {
        Some(row) => {
            let object = row.to_object(&plan.count_keys());
            println!("{}", serde_json::to_string_pretty(&object)?);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("error: no deletion has the id or request id {id:?}");
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_of_an_error_is_said_once() {
        // sqlx's message includes its cause, which is also its source.
        let e = anyhow::Error::from(sqlx::Error::Configuration("no host given".into()))
            .context("connecting");
        assert_eq!(
            error_chain(&e),
            "connecting: error with configuration: no host given"
        );
        let e = anyhow::Error::from(std::io::Error::other("disk on fire")).context("reading");
        assert_eq!(error_chain(&e), "reading: disk on fire");
    }
}
