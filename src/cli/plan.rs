//! The commands that read the plan and the live schema and leave the database as they found
//! it: `erasure plan` (and `--sql`), `plan --draft`, and `preview`. None creates the database,
//! migrates, or starts anything in the background: `plan` and `--draft` read through READ ONLY
//! transactions, and `preview` runs the erasure statement in a transaction it rolls back.
//!
//! Exit codes: 2 for a plan that cannot be used (unreadable, not TOML, inconsistent, with gaps,
//! or with `--strict` a path column without an index) and for a database `erasure migrate` has
//! not prepared; 1 for any other error (the database out of reach, say).

use std::process::ExitCode;

use crate::config::Settings;
use crate::db::{self, NotPrepared};
use crate::erase::preview::PreviewError;
use crate::plan::{Plan, PlanError, TableName, check, draft, indexes, live};
use crate::request::{self, Channel};

/// Reports what `result` met as exit 2 when it is a plan that cannot be used or a database not
/// prepared, saying it once; any other error goes on to the caller.
pub fn exit_2_for_unusable(result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    match result {
        Err(e) if unusable(&e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
        other => other,
    }
}

fn unusable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<NotPrepared>().is_some()
        || e.downcast_ref::<PlanError>()
            .is_some_and(PlanError::is_plan_problem)
}

/// `erasure plan [--sql] [--strict]`: the plan in words (or its statement), checked against
/// the live schema; a warning for each column its statements filter on that no index serves
/// (gaps, with `--strict`).
pub async fn plan(settings: &Settings, sql: bool, strict: bool) -> anyhow::Result<ExitCode> {
    let plan = Plan::load(settings.erasure.plan.as_deref())?;
    let pool = db::connect_existing(&settings.database, true).await?;
    let plan = check::against_live_schema(plan, &pool).await?;
    // What an erasure would leave behind (copies the plan must cover are gaps), and what the
    // server's log would keep of the worker's statements.
    let (plan, residue) = crate::plan::residue::read(plan, &pool).await?;
    if let Some(refusal) = residue.refusal() {
        print!("{}", residue.describe());
        return Err(refusal.into());
    }
    let logging = {
        let mut conn = pool.acquire().await?;
        crate::exhaust::Logging::read(&mut conn).await?
    };
    let storage = live::read_storage(&pool).await?;
    let unindexed: Vec<String> = indexes::unindexed(&plan, &storage)
        .iter()
        .map(ToString::to_string)
        .collect();
    if strict && !unindexed.is_empty() {
        return Err(PlanError::Gaps(unindexed).into());
    }
    for warning in &unindexed {
        eprintln!("warning: {warning}");
    }
    if sql {
        println!("{}", crate::plan::sql::erase_statement(&plan).render());
    } else {
        print!("{}", plan.describe());
        println!("\nThe plan covers the live schema.");
        if !unindexed.is_empty() {
            println!(
                "{} of the columns it filters on {} no index (warnings on stderr; --strict makes them gaps).",
                unindexed.len(),
                if unindexed.len() == 1 { "has" } else { "have" }
            );
        }
        print!("\n{}", residue.describe());
        print!("\n{}", logging.describe());
    }
    // The drift gate: columns that look personal that the plan neither reaches nor exempts.
    let drifted = strict && !super::canary::strict(&plan, &pool).await?;
    pool.close().await;
    if drifted {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// `erasure plan --draft`: a starting plan for the subject table, from the live schema.
pub async fn draft(settings: &Settings, subject: Option<String>) -> anyhow::Result<ExitCode> {
    let subject = match subject {
        Some(table) => TableName::parse(&table, "public"),
        None => Plan::load(settings.erasure.plan.as_deref())?.subject.table,
    };
    let pool = db::connect_existing(&settings.database, true).await?;
    let live = live::LiveSchema::read(&pool).await?;
    pool.close().await;
    match draft::draft(&live, &subject) {
        Ok(draft) => {
            print!("{draft}");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!("error: {why}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `erasure preview CUSTOMER`: the preview as JSON; exit 1 when no customer has it. It needs
/// the erasure schema as `erasure migrate` leaves it (the statement writes its deletion and
/// audit rows there before the rollback), and writes one row that stays: the audit row of the
/// preview itself.
pub async fn preview(settings: &Settings, customer: &str) -> anyhow::Result<ExitCode> {
    if let Err(problem) = request::check_identifier("customer", customer) {
        eprintln!("error: {problem}");
        return Ok(ExitCode::from(2));
    }
    let pool = db::connect_existing(&settings.database, false).await?;
    db::require_migrated(&pool).await?;
    let plan = crate::startup::checked_plan(settings, &pool).await?;
    let eraser = crate::startup::eraser(settings, &pool, plan).await?;
    let previewed = eraser.preview(customer, "cli", Channel::Cli).await;
    pool.close().await;
    match previewed {
        Ok(preview) => {
            println!("{}", serde_json::to_string_pretty(&preview.to_json())?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (PreviewError::NotFound | PreviewError::Busy)) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
