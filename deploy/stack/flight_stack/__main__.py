"""``python -m flight_stack`` (from deploy/stack): the same as deploy/stack/stack.py."""

import sys

from .cli import main

sys.exit(main())
