//! `erasure.claims`: the customer a chunked erasure has taken, by the request carrying it out.
//! While a claim stands, every other request for that customer waits (the erasure statement
//! takes no claimed customer as a target, and the fresh look holds such a request); the
//! statement that ends the chunked erasure, or its failure, lets the claim go.

use sqlx::PgConnection;
use uuid::Uuid;

/// Claims customer `subject_id` for `request_id`: true if it is this request's now (newly, or
/// already), false if another request holds it.
pub async fn claim(
    conn: &mut PgConnection,
    subject_id: &str,
    request_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let claimed: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO erasure.claims (subject_id, request_id) VALUES ($1, $2) \
         ON CONFLICT (subject_id) DO UPDATE SET claimed_at = erasure.claims.claimed_at \
         WHERE erasure.claims.request_id = EXCLUDED.request_id \
         RETURNING request_id",
    )
    .bind(subject_id)
    .bind(request_id)
    .fetch_optional(conn)
    .await?;
    Ok(claimed.is_some())
}

/// The request that holds customer `subject_id`, if any.
pub async fn claimed_by(
    conn: &mut PgConnection,
    subject_id: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT request_id FROM erasure.claims WHERE subject_id = $1")
        .bind(subject_id)
        .fetch_optional(conn)
        .await
}

/// Lets go whatever `request_id` holds (it ended without the erasure statement).
pub async fn release(conn: &mut PgConnection, request_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM erasure.claims WHERE request_id = $1")
        .bind(request_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// For the erasure statement: the condition that customer `subject_id` (SQL of its key as
/// text) is not held by a request other than `request_id`.
pub fn not_claimed_by_another(subject_id: &str, request_id: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM erasure.claims k WHERE k.subject_id = {subject_id} AND k.request_id <> {request_id})"
    )
}

/// For the erasure statement: its `unclaim` step, which lets go the claims of the requests it
/// ended (its step `outcome`).
pub fn unclaim() -> &'static str {
    "unclaim AS (\n  DELETE FROM erasure.claims WHERE request_id = ANY (ARRAY(SELECT request_id FROM outcome))\n)"
}
