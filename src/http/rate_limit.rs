//! Rate limits in fixed one-minute windows, counted in PostgreSQL (`erasure.rate_windows`), so
//! that every replica of the service counts against the same limit: behind three replicas a
//! key still gets its limit once. The windows follow the database's clock (the minute), so
//! replicas agree on when one starts over. Buckets: an API key (the API and the console's
//! pages alike), and per client address, the console's sign-ins and the failed key attempts.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::PgPool;

/// How often (in checks) the windows that ended are removed.
const PURGE_EVERY: u64 = 1000;

pub struct RateLimiter {
    pool: PgPool,
    limit: u32,
    checks: AtomicU64,
}

/// The answer for one request, and what the `X-RateLimit-*` headers say.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window starts over (at least 1).
    pub reset_after: u64,
}

impl RateLimiter {
    pub fn new(pool: PgPool, limit_per_minute: u32) -> Self {
        Self {
            pool,
            limit: limit_per_minute,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request in `bucket` against the limit per minute.
    pub async fn check(&self, bucket: &str) -> Decision {
        self.check_limit(bucket, self.limit).await
    }

    /// Counts one request in `bucket` against `limit` per minute. If the database cannot
    /// count, the request is let through (and logged): the request itself needs the database,
    /// and fails there if it is gone.
    pub async fn check_limit(&self, bucket: &str, limit: u32) -> Decision {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                let purged = sqlx::query(
                    "DELETE FROM erasure.rate_windows WHERE window_start < now() - interval '2 minutes'",
                )
                .execute(&pool)
                .await;
                if let Err(e) = purged {
                    tracing::warn!(error = %crate::db::SafeError(&e), "could not remove ended rate-limit windows");
                }
            });
        }
        let counted: Result<(Option<i32>, i64), sqlx::Error> = sqlx::query_as(
            "WITH w AS (\
               INSERT INTO erasure.rate_windows AS w (bucket, window_start, used) \
               VALUES ($1, date_trunc('minute', now()), 1) \
               ON CONFLICT (bucket, window_start) DO UPDATE SET used = w.used + 1 WHERE w.used < $2 \
               RETURNING used) \
             SELECT (SELECT used FROM w), \
               ceil(extract(epoch FROM date_trunc('minute', now()) + interval '1 minute' - now()))::bigint",
        )
        .bind(bucket)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .fetch_one(&self.pool)
        .await;
        match counted {
            Ok((used, reset_after)) => Decision {
                allowed: used.is_some_and(|u| u as u32 <= limit),
                limit,
                remaining: used.map_or(0, |u| limit.saturating_sub(u as u32)),
                reset_after: reset_after.max(1) as u64,
            },
            Err(e) => {
                tracing::warn!(error = %crate::db::SafeError(&e), "could not count a request against its rate limit; let through");
                Decision {
                    allowed: true,
                    limit,
                    remaining: limit,
                    reset_after: 60,
                }
            }
        }
    }

    /// Whether `bucket` has used up `limit` this minute, without counting a request: a client
    /// past its failed attempts is refused before its key is even looked up.
    pub async fn exhausted(&self, bucket: &str, limit: u32) -> bool {
        let used: Result<Option<i32>, sqlx::Error> = sqlx::query_scalar(
            "SELECT used FROM erasure.rate_windows WHERE bucket = $1 AND window_start = date_trunc('minute', now())",
        )
        .bind(bucket)
        .fetch_optional(&self.pool)
        .await;
        matches!(used, Ok(Some(u)) if u as u32 >= limit)
    }

    /// Seconds until the current window ends, by the database's clock.
    pub async fn reset_after(&self) -> u64 {
        sqlx::query_scalar::<_, i64>(
            "SELECT ceil(extract(epoch FROM date_trunc('minute', now()) + interval '1 minute' - now()))::bigint",
        )
        .fetch_one(&self.pool)
        .await
        .map_or(60, |s| s.max(1) as u64)
    }
}
