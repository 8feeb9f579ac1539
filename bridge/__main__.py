"""``python -m bridge`` runs the ``scorebridge`` command."""

import sys

from cli.main import main

sys.exit(main())
