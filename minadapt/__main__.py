"""`python -m minadapt ...`: the `minadapt` command (cli.py)."""
import sys

from .cli import main

sys.exit(main())
