"""Ad hoc charging (Decree-Law 93/2025, AFIR): scan the EVSE's QR code, see the price, pay a
hold, charge, get a receipt. A csms extension of its own (see :mod:`adhoc.extension`)."""
