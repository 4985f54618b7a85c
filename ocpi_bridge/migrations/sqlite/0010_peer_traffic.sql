-- Issue 19: each OCPI peer's traffic and failures, per hour (see ocpi_bridge/traffic.py):
-- requests it made to us (direction 'in', per module: ok, refused 4xx, failed 5xx) and
-- pushes we sent it (direction 'out', per kind: ok, failed, the last error). Written in
-- batches that add to the row; rows older than 14 days are deleted.
CREATE TABLE ocpi_peer_traffic (
    bucket         TEXT NOT NULL,     -- the hour, UTC
    peer_id        INTEGER NOT NULL,
    direction      TEXT NOT NULL,     -- in | out
    module         TEXT NOT NULL,     -- module called, or kind pushed
    ok             INTEGER NOT NULL,
    refused        INTEGER NOT NULL,
    failed         INTEGER NOT NULL,
    last_error     TEXT,              -- printable, at most 200 characters
    last_error_at  TEXT,
    PRIMARY KEY (bucket, peer_id, direction, module)
);
CREATE INDEX ix_ocpi_peer_traffic_peer ON ocpi_peer_traffic (peer_id, bucket);
