-- Issue 19: each real-time authorization (POST tokens/{uid}/authorize) that accepted a card,
-- so that the Session and CDR of the charge it starts carry the eMSP's token (its party,
-- contract_id, type), auth_method AUTH_REQUEST and the authorization_reference it answered
-- (ocpi_bridge.sessions). Written by the OCPP node that asked (ocpi_bridge.tokens), read by
-- the process that builds sessions. At most one row per (station, id tag) per few seconds;
-- rows older than 7 days are deleted.
CREATE TABLE ocpi_authorizations (
    id                       INTEGER PRIMARY KEY,
    station_id               TEXT NOT NULL,
    id_tag                   TEXT NOT NULL,   -- the id tag as the station presented it, upper-case
    owner                    TEXT NOT NULL,   -- CC/PID: the transaction's tag owner
    country_code             TEXT NOT NULL,   -- the token as the eMSP answered it (or pushed it)
    party_id                 TEXT NOT NULL,
    uid                      TEXT NOT NULL,
    type                     TEXT NOT NULL,
    contract_id              TEXT NOT NULL,
    authorization_reference  TEXT,
    peer_id                  INTEGER NOT NULL,  -- the peer whose answer accepted the card
    authorized_at            TEXT NOT NULL
);
CREATE INDEX ix_ocpi_authorizations_tag ON ocpi_authorizations (station_id, id_tag, authorized_at);
CREATE INDEX ix_ocpi_authorizations_at ON ocpi_authorizations (authorized_at);
