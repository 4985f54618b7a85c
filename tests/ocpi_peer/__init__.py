"""OCPI test peer (extrawest-ocpi eMSP in its own venv) and the harness that drives it."""
