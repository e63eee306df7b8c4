"""`python -m thadcr`: the same as the `thadcr` command."""

import sys

from thadcr.interfaces.cli import main

if __name__ == "__main__":
    sys.exit(main())
