//! The `erasure` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker;
use crate::config::Settings;
use crate::deletion;
use crate::plan::{Plan, check};
use crate::request;
use crate::startup::{Application, shutdown_signal};

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
    /// Migrate, declare the broker topology, and run the service until SIGTERM/SIGINT (default).
    Run,
    /// Run only the queue consumer.
    Worker,
    /// Apply migrations and exit.
    Migrate,
    /// Print the erasure plan and check it against the live schema.
    Plan {
        /// Print the generated SQL instead of the summary.
        #[arg(long)]
        sql: bool,
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
    },
    /// Print a deletion object by its del_ id or request id.
    Status { id: String },
}

pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&cli.config_dir).context("reading the configuration")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run | Command::Worker => {
            let app = Application::build(settings).await?;
            let shutdown = CancellationToken::new();
            let signal = {
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    shutdown.cancel();
                })
            };
            app.run_worker(shutdown).await;
            signal.abort();
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            crate::db::prepare(&settings.database).await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { sql } => {
            let plan = Plan::load(settings.erasure.plan.as_deref())?;
            let pool = crate::db::prepare(&settings.database).await?;
            if let Err(e) = check::against_live_schema(&plan, &pool).await {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
            if sql {
                println!("{};", crate::plan::sql::erase_statement(&plan));
            } else {
                print!("{}", plan.describe());
                println!("\nThe plan covers the live schema.");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Enqueue {
            customer,
            requested_by,
            reason,
            request_id,
        } => {
            let request_id = request_id.unwrap_or_else(Uuid::new_v4);
            let message = serde_json::json!({
                "request_id": request_id,
                "customer_id": customer,
                "requested_by": requested_by,
                "reason": reason,
            });
            let body = serde_json::to_vec(&message)?;
            // Refuse here what the worker would dead-letter.
            if let Err(invalid) = request::parse(&body) {
                eprintln!("error: not a valid request: {}", invalid.message);
                return Ok(ExitCode::from(2));
            }
            let connection = broker::connect(&settings.amqp).await?;
            let channel = broker::confirm_channel(&connection).await?;
            broker::declare_topology(&channel, &settings.amqp).await?;
            broker::publish_json(
                &channel,
                &settings.amqp.exchange,
                &settings.amqp.routing_key,
                &request_id.to_string(),
                &body,
                true,
            )
            .await?;
            let _ = connection.close(200, "done".into()).await;
            println!("{request_id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { id } => {
            let plan = Plan::load(settings.erasure.plan.as_deref())?;
            let pool = crate::db::prepare(&settings.database).await?;
            match deletion::find(&pool, &id).await? {
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
    }
}
