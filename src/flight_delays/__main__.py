"""``python -m flight_delays``: the steps without Airflow (see flight_delays.cli)."""

from __future__ import annotations

import sys

from flight_delays.cli import main

sys.exit(main())
