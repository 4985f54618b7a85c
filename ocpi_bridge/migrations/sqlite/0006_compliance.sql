-- Measurements of MOBI.E's push rules, per hour, peer, rule and object (see compliance.py).
CREATE TABLE ocpi_compliance (
    bucket         TEXT NOT NULL,     -- the hour, UTC
    peer_id        INTEGER NOT NULL,
    rule           TEXT NOT NULL,     -- R1 R5 R6 R7 R8
    object_kind    TEXT NOT NULL,     -- station | session
    object_id      TEXT NOT NULL,
    samples        INTEGER NOT NULL,
    total_seconds  REAL NOT NULL,
    max_seconds    REAL NOT NULL,
    late           INTEGER NOT NULL,
    failures       INTEGER NOT NULL,
    PRIMARY KEY (bucket, peer_id, rule, object_kind, object_id)
);
CREATE INDEX ix_ocpi_compliance_object ON ocpi_compliance (object_kind, object_id, bucket);
