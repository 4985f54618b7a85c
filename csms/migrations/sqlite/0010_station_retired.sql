-- Retired stations (POST /api/v1/stations/{id}/retire): the time the operator retired the
-- station and why. A retired station keeps its row, its history and its Location (its EVSEs
-- are published REMOVED); its handshakes are refused. An EVSE retired alone is marked in
-- the station's definition (its "removed_at"), as the OCPI bridge reads it.
ALTER TABLE stations ADD COLUMN retired_at TEXT;
ALTER TABLE stations ADD COLUMN retired_reason TEXT;
