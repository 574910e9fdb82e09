"""`python -m minivid ...`: the command line (see minivid.cli)."""
import sys

from minivid.cli import main

if __name__ == "__main__":
    sys.exit(main())
