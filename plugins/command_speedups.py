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

The execution API hook reads and replaces private internals of Airflow and Cadwyn, so it
applies only to the versions it was tested with (:data:`TESTED_VERSIONS`, read from the
installed distributions with importlib.metadata). With any other version it changes
nothing and logs, once per process, that it is off and why; the commands then pay
Airflow's own cost. After an upgrade: run tests/e2e/test_dev_loop.py and
tests/plugins/test_command_speedups.py against the new versions, then add them here.
``freeze_heap_at_exit()`` uses only the public ``gc`` API: it is not gated.
"""

from __future__ import annotations

import atexit
import copy
import gc
import logging
from typing import Any

log = logging.getLogger("flight_delays.test_commands")

_MARK = "_flight_delays_newest_only"
#: Distribution -> the versions the execution API hook was tested with. apache-airflow-core
#: holds airflow.api_fastapi (the app factory it wraps); cadwyn, the version bundle and
#: the route tag it reads.
TESTED_VERSIONS: dict[str, tuple[str, ...]] = {
    "apache-airflow-core": ("3.3.2",),
    "cadwyn": ("7.0.0",),
}
_off_logged = False


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def untested_versions() -> list[str]:
    """Why the hook is off: one entry per distribution not at a tested version (empty
    when every one is)."""
    found = []
    for distribution, tested in TESTED_VERSIONS.items():
        version = installed_version(distribution)
        if version not in tested:
            shown = "not installed" if version is None else version
            found.append(f"{distribution} {shown} (tested: {', '.join(tested)})")
    return found


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

    Only with the Airflow and Cadwyn versions of :data:`TESTED_VERSIONS`: with another,
    nothing is touched, and the first call logs that the hook is off and why.
    """
    global _off_logged
    untested = untested_versions()
    if untested:
        if not _off_logged:
            _off_logged = True
            log.warning(
                "In-process execution API: the newest-version-only speed-up is off, because "
                "it was not tested with %s; Airflow builds all API versions",
                "; ".join(untested),
            )
        return False
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
