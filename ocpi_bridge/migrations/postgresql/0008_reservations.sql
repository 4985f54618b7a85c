-- PostgreSQL twin of sqlite/0008_reservations.sql.
-- Issue 16, item 4: OCPI RESERVE_NOW / CANCEL_RESERVATION (peers other than MOBI.E, whose
-- profile answers NOT_SUPPORTED). An eMSP names its reservation (reservation_id, unique
-- per party); csms keeps the reservation itself (its table reservations, its own id, read
-- through the port): this maps one to the other.
CREATE TABLE ocpi_reservations (
    party                TEXT NOT NULL,      -- the eMSP, CC/PID
    reservation_id       TEXT NOT NULL,      -- the eMSP's, upper case (a CiString)
    csms_reservation_id  BIGINT,             -- csms's reservationId, once it made one
    station_id           TEXT NOT NULL,
    connector_id         BIGINT NOT NULL, 
    command_id           TEXT NOT NULL,      -- the RESERVE_NOW (ocpi_commands.id)
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    PRIMARY KEY (party, reservation_id)
);
