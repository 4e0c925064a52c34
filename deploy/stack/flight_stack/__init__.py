"""The Airflow stack without Docker (`make up`, `make down`, `make stack-status`, `make
logs`), run through its entry script deploy/stack/stack.py. Not part of the installed
flight_delays package: standard library only, so that `make down` runs with any Python 3
(supervisor and psycopg2, from the venv, are imported only by `up` and `status`).

Modules, one per concern:

- :mod:`.cli`: the commands (up, down, status, logs, run) and their usage;
- :mod:`.settings`: folders, ports, secrets, the environment every component gets;
- :mod:`.postgres`: the private PostgreSQL cluster, where it may live, its two databases;
- :mod:`.supervisor`: supervisord, which runs and restarts PostgreSQL and the Airflow
  components;
- :mod:`.preload`: the check that the forkserver's preload list imports (`up`, and
  docker-compose's airflow-init, whose image holds it and :mod:`.errors`);
- :mod:`.errors`: the stack's error type;
- :mod:`.repair`: `up` on a partly dead stack (programs stopped, supervisord killed);
- :mod:`.procs`: finding the stack's processes in /proc and stopping them;
- :mod:`.health`: Airflow's health report, is the stack up;
- :mod:`.component`: the wrapper supervisord runs for each component (a script);
- :mod:`.s3server`: the celery stack's S3 server (moto) with its bucket (a script, run
  with the venv's Python);
- :mod:`.worker_host`: the name a Celery worker gives its task instances.
"""
