-- PostgreSQL twin of sqlite/0006_compliance.sql.
-- Measurements of MOBI.E's push rules, per hour, peer, rule and object (see compliance.py).
CREATE TABLE ocpi_compliance (
    bucket         TEXT NOT NULL,     -- the hour, UTC
    peer_id        BIGINT NOT NULL,
    rule           TEXT NOT NULL,     -- R1 R5 R6 R7 R8
    object_kind    TEXT NOT NULL,     -- station | session
    object_id      TEXT NOT NULL,
    samples        BIGINT NOT NULL,
    total_seconds  DOUBLE PRECISION NOT NULL,
    max_seconds    DOUBLE PRECISION NOT NULL,
    late           BIGINT NOT NULL,
    failures       BIGINT NOT NULL,
    PRIMARY KEY (bucket, peer_id, rule, object_kind, object_id)
);
CREATE INDEX ix_ocpi_compliance_object ON ocpi_compliance (object_kind, object_id, bucket);
