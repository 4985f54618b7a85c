"""``python -m charger_sim`` runs the CLI."""

import sys

from charger_sim.cli import main

sys.exit(main())
