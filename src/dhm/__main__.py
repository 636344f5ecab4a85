"""``python -m dhm ...`` (also what ``torchrun -m dhm train ...`` runs)."""

import sys

from .cli import main

sys.exit(main())
