"""Imported last by the LocalExecutor's forkserver (deploy/executor-local.env): moves
everything the forkserver preloaded into the garbage collector's permanent generation.

Python's collector walks every tracked object of the generations it collects. A task
process is forked from a worker that was forked from the forkserver, so it starts with
the preloaded libraries' objects, about 400,000 of them: each full collection in a task
walked them all (0.25 s a time, about once a night in score) and wrote to their headers,
which copies their pages out of the memory the processes share. Frozen objects are not
walked. This is the use Python's documentation gives ``gc.freeze`` (freeze before fork).
Airflow's LocalExecutor freezes before it forks its workers itself, but not in the
forkserver it starts them from instead (docs/benchmarks.md, "What Airflow owns").

It collects first: a frozen object is never freed, so garbage the imports left would
otherwise stay in the forkserver and every task (the discussion of Airflow's dag-processor
freeze, apache/airflow PR #60505, measured that leak). It imports nothing else, so the
tasks still import the project's modules as they are now.
"""

import gc

gc.collect()
gc.freeze()
