-- Sessions of the web console (src/console/): an API key exchanged for an opaque cookie. Only
-- a SHA-256 of the cookie's token is kept. A session ends at its expiry, at sign-out, or when
-- its key is revoked (every request checks the key).
CREATE TABLE erasure.console_sessions (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    key_id      text NOT NULL REFERENCES erasure.api_keys (id),
    -- The token every form of the session carries (CSRF).
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires_idx ON erasure.console_sessions (expires_at);
