"""``python -m kmunet`` (also what ``torchrun -m kmunet train ...`` runs)."""

import sys

from kmunet.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
