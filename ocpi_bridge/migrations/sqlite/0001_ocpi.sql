-- The OCPI bridge's own tables: registered peers and their credentials, tokens pushed by
-- eMSPs, tariffs defined by the operator, and CDRs (immutable once made).

CREATE TABLE ocpi_tokens_a (
    token       TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL,
    used_at     TEXT,              -- a token A is valid until one registration used it
    used_by     INTEGER
);

CREATE TABLE ocpi_peers (
    id                INTEGER PRIMARY KEY,
    status            TEXT NOT NULL,            -- registered | unregistered
    token_in          TEXT UNIQUE,              -- the token we issued (C): the peer calls us with it
    token_out         TEXT NOT NULL,            -- the token the peer gave us (B): we call it with it
    token_out_base64  INTEGER NOT NULL,         -- encode token_out in Base64 (2.2.1) or not (2.2)
    versions_url      TEXT NOT NULL,
    version           TEXT NOT NULL,            -- the version both sides use
    endpoints         TEXT NOT NULL,            -- JSON: [{identifier, role, url}]
    roles             TEXT NOT NULL,            -- JSON: the peer's CredentialsRoles
    initiated_by      TEXT NOT NULL,            -- peer (it registered with us) | us
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

-- One row per (country, party, role) a registered peer speaks for: who owns what.
CREATE TABLE ocpi_peer_parties (
    peer_id       INTEGER NOT NULL REFERENCES ocpi_peers(id) ON DELETE CASCADE,
    country_code  TEXT NOT NULL COLLATE NOCASE,
    party_id      TEXT NOT NULL COLLATE NOCASE,
    role          TEXT NOT NULL,
    PRIMARY KEY (country_code, party_id, role)
);

CREATE TABLE ocpi_tokens (
    country_code  TEXT NOT NULL COLLATE NOCASE,
    party_id      TEXT NOT NULL COLLATE NOCASE,
    uid           TEXT NOT NULL COLLATE NOCASE,
    type          TEXT NOT NULL,
    body          TEXT NOT NULL,          -- JSON: the Token as stored
    valid         INTEGER NOT NULL,
    whitelist     TEXT NOT NULL,
    last_updated  TEXT NOT NULL,
    peer_id       INTEGER,
    PRIMARY KEY (country_code, party_id, uid, type)
);
CREATE INDEX ix_ocpi_tokens_uid ON ocpi_tokens (uid COLLATE NOCASE);

CREATE TABLE ocpi_tariffs (
    id            TEXT PRIMARY KEY COLLATE NOCASE,
    body          TEXT NOT NULL,          -- JSON: TariffDef
    created_at    TEXT NOT NULL,
    last_updated  TEXT NOT NULL
);

CREATE TABLE ocpi_cdrs (
    id              TEXT PRIMARY KEY,
    transaction_id  INTEGER NOT NULL UNIQUE,
    owner           TEXT,                -- 'CC/PID' of the token's eMSP, NULL for local tags
    body            TEXT NOT NULL,       -- JSON: the CDR, never changed
    created_at      TEXT NOT NULL        -- = its last_updated
);
CREATE INDEX ix_ocpi_cdrs_created ON ocpi_cdrs (created_at);
