"""Speed-ups for the short-lived commands that run tasks in one process: ``airflow dags
test`` (`make run`), ``airflow tasks test`` and ``dev/run_tasks.py`` (`make task`).

Not a plugin (it defines none): it lives in the plugins folder because every Airflow
process puts that folder on ``sys.path``, so the DAG file and the runner both import it.
The plugins manager imports it in every Airflow process too: nothing but the standard
library is imported at module level, and nothing runs until a command calls it.

- ``use_newest_execution_api_version_only()``: these commands talk to Airflow's execution
  API in-process (``InProcessExecutionAPI``), through the Task SDK's client, which names
  the newest API version in every request. Airflow builds that app with all its versions,
  and Cadwyn generates every version's routers on the first request: ~5 s (quiet) of a
  command's fixed cost, for versions no request here names (docs/benchmarks.md, "The
  developer loop" and "Airflow's overhead: where the time goes").
- ``freeze_heap_at_exit()``: Airflow leaves ~700k objects alive, and the interpreter's
  last collection walks them all (~2 s); frozen objects are skipped.

The long-lived components (scheduler, dag-processor, api-server, triggerer, task
processes) never call either: the DAG file calls ``speed_up_test_command()`` only under
``airflow tasks test`` / ``airflow dags test``.
"""

from __future__ import annotations

import atexit
import copy
import gc
import logging
from typing import Any

log = logging.getLogger("flight_delays.test_commands")

_MARK = "_flight_delays_newest_only"


def freeze_heap_at_exit() -> None:
    """Register ``gc.freeze()`` to run at exit (after the exit handlers registered later)."""
    atexit.register(gc.freeze)


def speed_up_test_command() -> None:
    """Both speed-ups, for ``airflow tasks test`` / ``dags test`` (called by the DAG file)."""
    freeze_heap_at_exit()
    use_newest_execution_api_version_only()


def use_newest_execution_api_version_only() -> bool:
    """Make this process's in-process execution API serve only the newest API version.

    The app built instead has the same routes as the full app's newest version (a test
    checks it) and no request or response migration, as for the newest version of the
    full app.

    How: ``InProcessExecutionAPI.app`` calls ``create_task_execution_api_app()``, which
    reads the module globals ``versions.bundle`` and ``routes.execution_api_router``; it
    is wrapped to see, for the duration of the call, a bundle of the newest version
    alone and the router without the routes that exist only in older versions (Cadwyn
    refuses a route marked so that no version restores). Every assumption is checked
    first; when one fails, or the slim app fails to build, it logs why and Airflow's own
    function builds the full app. Calling it again changes nothing. Returns whether the
    wrapper is installed.
    """
    try:
        from airflow.api_fastapi.execution_api import app as app_module
        from airflow.api_fastapi.execution_api import routes, versions
        from airflow.sdk.api.datamodels._generated import API_VERSION
        from cadwyn import HeadVersion, Version, VersionBundle
        from cadwyn.route_generation import _DELETED_ROUTE_TAG
        from fastapi.routing import APIRoute
    except ImportError as exc:
        return _all_versions(f"an import failed ({exc})")

    build = getattr(app_module, "create_task_execution_api_app", None)
    if getattr(build, _MARK, False):
        return True
    bundle = getattr(versions, "bundle", None)
    router = getattr(routes, "execution_api_router", None)
    if not callable(build) or not hasattr(app_module, "InProcessExecutionAPI"):
        return _all_versions("airflow.api_fastapi.execution_api.app has changed")
    if not isinstance(bundle, VersionBundle) or not bundle.versions:
        return _all_versions("execution_api.versions.bundle is not a Cadwyn VersionBundle")
    if bundle.head_version.changes:
        return _all_versions("the head version has changes of its own")
    if bundle.versions[0].value != API_VERSION:
        return _all_versions(
            f"the client speaks {API_VERSION}, the newest API version is {bundle.versions[0].value}"
        )
    if not isinstance(getattr(router, "routes", None), list):
        return _all_versions("execution_api.routes.execution_api_router is not a router")

    def newest_only(*args: Any, **kwargs: Any) -> Any:
        newest = VersionBundle(
            HeadVersion(), Version(API_VERSION), api_version_var=bundle.api_version_var
        )
        current = copy.copy(router)
        current.routes = [
            route
            for route in router.routes
            if not (isinstance(route, APIRoute) and _DELETED_ROUTE_TAG in route.tags)
        ]
        try:
            versions.bundle, routes.execution_api_router = newest, current
            try:
                app = build(*args, **kwargs)
            finally:
                versions.bundle, routes.execution_api_router = bundle, router
            # Cadwyn builds the routers on the first request; build them now, so a
            # failure falls back here instead of failing the first task.
            app._cadwyn_initialize()
            served = tuple(app.router.versioned_routers)
            if served != (API_VERSION,):
                raise RuntimeError(f"the app serves {served}")
        except Exception:
            log.warning(
                "In-process execution API: the newest-version-only app failed to build; "
                "building all %d versions",
                len(bundle.versions),
                exc_info=True,
            )
            return build(*args, **kwargs)
        log.info("In-process execution API: API version %s only", API_VERSION)
        return app

    setattr(newest_only, _MARK, True)
    app_module.create_task_execution_api_app = newest_only
    return True


def _all_versions(reason: str) -> bool:
    log.warning("In-process execution API: building all API versions, because %s", reason)
    return False
