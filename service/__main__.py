"""``python -m service`` runs the ecswatch CLI."""

import sys

from service.cli import main

sys.exit(main())
