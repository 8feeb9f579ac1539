"""``python -m bridge`` runs the ``scorebridge`` command."""

import sys

from bridge.cli import main

sys.exit(main())
