"""`python -m minadapt.serve ...`, the same as `minadapt serve ...`."""
import argparse
import sys

from ..errors import MinadaptError
from . import add_arguments, main

parser = add_arguments(argparse.ArgumentParser(prog="minadapt serve"))
arguments = parser.parse_args()
try:
    sys.exit(main(arguments))
except MinadaptError as e:
    print(f"minadapt serve: error: {e}", file=sys.stderr)
    sys.exit(2)  # a user error, as `minadapt serve` ends it
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
