-- PostgreSQL twin of sqlite/0004_web_users.sql.
-- The web interface: its users (besides those in the configuration file), its login
-- sessions (only a SHA-256 digest of each session cookie is stored), and indexes that its
-- pages filter and sort transactions with.
CREATE TABLE web_users (
    name           TEXT PRIMARY KEY,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    password_hash  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE web_sessions (
    id              TEXT PRIMARY KEY,      -- hex SHA-256 of the cookie value
    user_name       TEXT NOT NULL,
    csrf_token      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    remote_address  TEXT
);
CREATE INDEX ix_web_sessions_user ON web_sessions (user_name);
CREATE INDEX ix_web_sessions_expires ON web_sessions (expires_at);

-- sessions page: active or completed, newest first; dashboard: energy of those ended today
CREATE INDEX ix_transactions_active_start ON transactions (start_time)
    WHERE stop_received_at IS NULL;
CREATE INDEX ix_transactions_done_start ON transactions (start_time)
    WHERE stop_received_at IS NOT NULL;
CREATE INDEX ix_transactions_stop_time ON transactions (stop_time);
