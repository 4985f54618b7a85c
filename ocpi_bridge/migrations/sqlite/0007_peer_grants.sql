-- Issue 12: a peer's powers are the operator's decision, fixed when its token A is made.
--
-- A token A now carries its grant: the role (HUB or EMSP) and the parties ("CC/PID", JSON)
-- a registration with it may claim. Tokens A made before this migration have none: they
-- can no longer be used to register (make a new one with --role and --party).
ALTER TABLE ocpi_tokens_a ADD COLUMN role TEXT;
ALTER TABLE ocpi_tokens_a ADD COLUMN parties TEXT;

-- What each peer was granted. Its parties are its rows in ocpi_peer_parties (written from
-- the grant at registration, never from the peer's credentials again); this row holds the
-- role that decides whether it is a hub, and where the grant came from:
--   token_a   the grant of the token A it registered with
--   operator  given with `csms ocpi register --role --party` (we registered with it)
--   legacy    a peer registered before grants existed: it keeps exactly what it had (its
--             parties, and HUB if it had claimed HUB), flagged for the operator to review
CREATE TABLE ocpi_peer_grants (
    peer_id     INTEGER PRIMARY KEY,
    role        TEXT NOT NULL,            -- HUB | EMSP
    source      TEXT NOT NULL,            -- token_a | operator | legacy
    granted_at  TEXT NOT NULL
);

INSERT INTO ocpi_peer_grants (peer_id, role, source, granted_at)
SELECT p.id,
       CASE WHEN EXISTS (SELECT 1 FROM ocpi_peer_parties pp
                         WHERE pp.peer_id = p.id AND pp.role = 'HUB')
              OR EXISTS (SELECT 1 FROM json_each(p.roles) r
                         WHERE json_extract(r.value, '$.role') = 'HUB')
            THEN 'HUB' ELSE 'EMSP' END,
       'legacy',
       p.updated_at
FROM ocpi_peers p;

-- What a peer tried and was refused, and tokens whose uid another party already holds:
-- shown on the hub-link page (never a secret: no token, no body). Kept bounded by the
-- code (the newest rows only).
CREATE TABLE ocpi_security_events (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,            -- claim_refused | uid_taken | ambiguous_uid ...
    peer_id     INTEGER,
    detail      TEXT NOT NULL
);
CREATE INDEX ix_ocpi_security_events_at ON ocpi_security_events (at);
