"""Smart charging: OCPP 1.6 charging profiles and sharing a site's grid connection (issue 18)."""
