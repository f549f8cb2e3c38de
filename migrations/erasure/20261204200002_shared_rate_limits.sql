-- Rate limits counted where every replica sees them: one row per bucket (an API key, a client
-- address's sign-ins or failed keys) and minute. UNLOGGED: a count lost in a crash costs
-- nothing but a fresh minute, and counting writes no WAL.
CREATE UNLOGGED TABLE erasure.rate_windows (
    bucket       text NOT NULL,
    window_start timestamptz NOT NULL,
    used         integer NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
