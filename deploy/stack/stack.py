#!/usr/bin/env python3
"""The Airflow stack without Docker: `make up`, `make down`, `make stack-status`, `make logs`.

    python deploy/stack/stack.py up | down | status | logs | run CMD [ARG...]

The entry script of the package beside it, flight_stack/ (the commands, their settings
and where things live: flight_stack/cli.py). Standard library only: `down` runs with
any Python 3.
"""

import sys
from pathlib import Path

# The package beside this script: it is not installed (the Makefile runs this file by path).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flight_stack.cli import main

if __name__ == "__main__":
    sys.exit(main())
