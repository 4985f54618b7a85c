-- When the operator last defined the station (its Location), apart from updated_at, which
-- boots and status fields also move.
ALTER TABLE stations ADD COLUMN defined_at TEXT;
UPDATE stations SET defined_at = updated_at WHERE defined = 1;
