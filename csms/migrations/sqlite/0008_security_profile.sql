-- OCPP 1.6 security profiles per station (csms.server's handshake): 1 Basic auth (over
-- plain ws where ocpp.allow_unsecured allows it), 2 TLS and Basic auth, 3 TLS with a client
-- certificate naming the station. pending_security_profile: a raise sent to the station
-- (ChangeConfiguration SecurityProfile) and not yet seen in use; both are accepted meanwhile.
ALTER TABLE stations ADD COLUMN security_profile INTEGER NOT NULL DEFAULT 1;
ALTER TABLE stations ADD COLUMN pending_security_profile INTEGER;
