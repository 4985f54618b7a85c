-- Issue 16, items 4 and 6.
--
-- Reservations (ReserveNow / CancelReservation): csms allocates the reservationId (this
-- row's id). state: requested (sent, no answer yet or none came) | accepted | rejected
-- (the station's answer is in `answer`) | cancelled | expired (past expiry_date, decided
-- by csms's clock) | used (a StartTransaction named it: transaction_id).
-- requested_by: who asked ("api:USER", "web:USER", "ocpi:CC/PID").
CREATE TABLE reservations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    station_id      TEXT NOT NULL,
    connector_id    INTEGER NOT NULL,
    id_tag          TEXT NOT NULL,
    parent_id_tag   TEXT,
    expiry_date     TEXT NOT NULL,
    state           TEXT NOT NULL,
    answer          TEXT,
    requested_by    TEXT NOT NULL,
    transaction_id  INTEGER,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    cancelled_by    TEXT
);
CREATE INDEX ix_reservations_station ON reservations (station_id, id);
CREATE INDEX ix_reservations_state ON reservations (state, expiry_date);
CREATE INDEX ix_transactions_reservation ON transactions (reservation_id)
    WHERE reservation_id IS NOT NULL;

-- Stuck transactions closed by an admin (POST /api/v1/transactions/{id}/close): who, when,
-- why, and the evidence that it was stuck (JSON). The transaction is also flagged
-- manual_close and its stop_reason is "Manual".
ALTER TABLE transactions ADD COLUMN closed_by TEXT;
ALTER TABLE transactions ADD COLUMN closed_at TEXT;
ALTER TABLE transactions ADD COLUMN close_reason TEXT;
ALTER TABLE transactions ADD COLUMN close_evidence TEXT;
