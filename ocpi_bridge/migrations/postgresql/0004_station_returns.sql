-- PostgreSQL twin of sqlite/0004_station_returns.sql.
-- When each station last spoke again after a silence (rule R7): its EVSEs' real statuses
-- are as new as that, and must stay so across a restart.
CREATE TABLE ocpi_station_returns (
    station_id   TEXT PRIMARY KEY,
    returned_at  TEXT NOT NULL
);
