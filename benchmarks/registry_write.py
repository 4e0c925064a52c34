"""Time of one registry write (the score step's transaction: lock the champion row,
check its version, insert the run, move the champion) on a given database.

    .venv/bin/python benchmarks/registry_write.py [--url URL] [--runs 200]

Default URL: a throw-away SQLite file. Pass a scratch PostgreSQL database to measure
that (the tables are created there by the registry's migrations).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from flight_delays.store import registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    url = args.url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'registry.sqlite'}"
    engine = registry.connect(url)
    first = date(2013, 1, 1)
    times = []
    for k in range(args.runs):
        day = first + timedelta(days=k)
        champion = registry.current_champion(engine)
        row = {
            "processed_day": day,
            "run_id": f"bench-{k}",
            "window_start": day,
            "window_end": day,
            "holdout_start": day,
            "holdout_end": day,
            "holdout_rows": 6000,
            "model_path": "/models/x.skops",
            "model_sha256": f"{k:064x}",
            "challenger_mae": 20.0 - k * 1e-3,
            "champion_mae": 20.0,
            "baseline_mae": 21.0,
            "champion_kind": champion.kind,
            "champion_day": champion.processed_day,
            "metrics_json": "{}",
            "decision": "promoted" if k % 2 else "kept",
            "reason": "bench",
        }
        start = time.perf_counter()
        registry.record_run(engine, row, bool(k % 2), champion.version)
        times.append((time.perf_counter() - start) * 1000)
    engine.dispose()
    print(
        f"{registry.safe_url(url)}: {args.runs} writes, median {statistics.median(times):.2f} ms, "
        f"p95 {sorted(times)[int(0.95 * len(times))]:.2f} ms, max {max(times):.2f} ms"
    )


if __name__ == "__main__":
    main()
