-- PostgreSQL twin of sqlite/0009_peer_policy.sql.
-- Issue 19: roaming with several peers. Each peer has a policy the operator decides (see
-- ocpi_bridge/peers.py: its name, the modules it may use and receive, MOBI.E's rules or
-- not, real-time authorization, Locations hidden from it, its own tariffs, its version),
-- carried by the token A it registers with and editable afterwards; a peer may be
-- suspended. JSON text; NULL: the defaults of its role.
ALTER TABLE ocpi_tokens_a ADD COLUMN policy TEXT;
ALTER TABLE ocpi_peer_grants ADD COLUMN policy TEXT;
ALTER TABLE ocpi_peer_grants ADD COLUMN suspended_at TEXT;

-- hubclientinfo (OCPI 2.2.1 section 13), received from a hub: the parties it connects
-- and whether they are reachable. Upper-case country codes and party ids.
CREATE TABLE ocpi_hub_client_info (
    hub_peer_id   BIGINT NOT NULL,
    country_code  TEXT NOT NULL,
    party_id      TEXT NOT NULL,
    role          TEXT NOT NULL,
    status        TEXT NOT NULL,      -- CONNECTED | OFFLINE | PLANNED | SUSPENDED
    last_updated  TEXT NOT NULL,      -- the hub's time
    received_at   TEXT NOT NULL,
    PRIMARY KEY (hub_peer_id, country_code, party_id, role)
);
