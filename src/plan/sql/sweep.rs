//! The sweep of rows the customer referenced that an erasure kept because something used them,
//! and that nothing alive uses any more (the check after commit found them): each is cleared as
//! the plan says (deleted or anonymized), as the erasure would have.
//!
//! Two statements in one transaction, like the erasure's: the rows are locked first, so that
//! the second statement, whose snapshot begins after the locks are held, sees every use
//! committed meanwhile, and nothing new can point at a row while it is cleared.

use super::reach::{change, used};
use super::{Params, Statement, Value};
use crate::plan::{Plan, ident};

/// The sweep of one referenced table: `lock`, then `clear`, both taking the row keys as text.
pub struct Sweep {
    /// The table, `schema.table`, as the erasure's `kept` record names it.
    pub table: String,
    pub lock: Statement,
    /// Returns the key (as text) of each row it cleared.
    pub clear: Statement,
}

/// A sweep for each referenced table of the plan.
pub fn sweep_statements(plan: &Plan) -> Vec<Sweep> {
    plan.referenced
        .iter()
        .map(|r| {
            let sql_type = plan
                .facts
                .column_types
                .get(&(r.table.clone(), r.key.clone()))
                .map_or("text", String::as_str);
            let key = ident(&r.key);
            let keys = |params: &mut Params| {
                format!(
                    "ARRAY(SELECT CAST(e AS {sql_type}) FROM unnest({}) e)",
                    params.typed(Value::SubjectIds, "text[]")
                )
            };
            let mut params = Params::default();
            let lock = format!(
                "SELECT x.{key} FROM {table} x WHERE x.{key} = ANY ({keys}) ORDER BY x.{key} FOR UPDATE OF x",
                table = r.table.sql(),
                keys = keys(&mut params),
            );
            let lock = params.finish(lock);
            let mut params = Params::default();
            let condition = format!(
                "x.{key} = ANY ({}) AND NOT {}",
                keys(&mut params),
                used(plan, r, "x", None)
            );
            let clear = change(
                plan,
                &r.table,
                &r.action,
                None,
                &condition,
                &format!("x.{key}::text"),
                Some(&format!("x.{key}::text")),
                &mut params,
            );
            Sweep {
                table: r.table.to_string(),
                lock,
                clear: params.finish(clear),
            }
        })
        .collect()
}
