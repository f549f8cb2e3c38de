//! `erasure canary`, and the drift gate `erasure plan --strict` adds: the two checks meant for
//! CI after each migration.

use std::path::PathBuf;
use std::process::ExitCode;

use sqlx::PgPool;

use crate::canary::{self, CanaryError, Options};
use crate::config::Settings;
use crate::plan::Plan;
use crate::startup::Application;

/// The drift gate: prints the columns that look personal and that the plan neither reaches
/// nor exempts; whether there are none.
pub(super) async fn strict(plan: &Plan, pool: &PgPool) -> anyhow::Result<bool> {
    let drift = crate::plan::drift::find(plan, pool).await?;
    if drift.is_empty() {
        println!("\nStrict: every column that looks personal is reached by the plan or exempt.");
        return Ok(true);
    }
    eprintln!("error: columns that look personal are neither reached by the plan nor exempt:");
    for d in &drift {
        eprintln!(
            "  - {}.{} ({}): give {} a [[step]] that deletes its rows or clears the column, or [[exempt]] table = \"{}\" columns = [\"{}\"] with the reason",
            d.table, d.column, d.why, d.table, d.table, d.column
        );
    }
    Ok(false)
}

/// `erasure canary`: exit 0 when nothing of the canary is found, 1 naming where something is,
/// 2 when it could not run.
pub(super) async fn run(
    settings: Settings,
    server_log: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let app = Application::build(settings).await?;
    let parts = canary::Parts {
        pool: &app.pool,
        eraser: &app.eraser,
        verifier: &app.verifier,
        residue: &app.residue,
    };
    let outcome = canary::run(&parts, &Options { server_log }).await;
    app.pool.close().await;
    let report = match outcome {
        Ok(report) => report,
        Err(e @ (CanaryError::Plant(_) | CanaryError::Erasure(_))) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    println!("canary {} planted in:", report.token);
    for planted in &report.planted {
        println!("  {planted}");
    }
    if let Some(id) = &report.deletion_id {
        println!("erased by deletion {id}");
    }
    for line in &report.not_scanned {
        println!("not scanned: {line}");
    }
    for line in &report.remains {
        println!("remains: {line}");
    }
    if report.passed() {
        println!("no value of the canary was found");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("error: the canary's values are still found after its erasure:");
    for line in &report.found {
        eprintln!("  - {line}");
    }
    Ok(ExitCode::from(1))
}
