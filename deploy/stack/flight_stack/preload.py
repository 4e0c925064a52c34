"""The check of the forkserver's preload list (Airflow's mp_forkserver_preload), run by
`up` and, through :func:`main`, by docker-compose's airflow-init (deploy/airflow-init.sh).

The LocalExecutor's workers come from a multiprocessing forkserver that imports the
listed modules first (deploy/executor-local.env). The forkserver skips a module that
raises ImportError, but any other error while importing one ends it, and the scheduler
then cannot start a worker: every task fails, and nothing names the module. So `up`
imports each list in a fresh interpreter, in the same order, with the stack's settings and
folder, while PostgreSQL starts and the metastore migrates, and stops with the module's
name and its error before it starts Airflow. A module that does not import (ImportError:
an upgrade renamed it) is only reported: the forkserver skips it too, and the tasks import
what they need.

The lists are resolved as Airflow resolves them for each component that sets its start
method (airflow.utils.process_utils.set_component_mp_start_method): ``[<component>]``
first, then ``[core]``, and only where the start method is ``forkserver``; from the
environment variables the stack gives the components (it writes no airflow.cfg options).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StackError

#: The components that apply Airflow's start method and preload settings.
COMPONENTS = ("scheduler", "triggerer", "dag_processor")

# What the forkserver does with each name (multiprocessing.forkserver.main): __import__,
# ImportError skipped. One line per module that did not import, tab-separated; the
# traceback of a module that breaks goes to stderr.
_IMPORT_EACH = """
import sys, traceback
for name in sys.argv[1:]:
    try:
        __import__(name)
    except ImportError as error:
        print(f"missing\\t{name}\\t{error}", flush=True)
    except BaseException as error:
        traceback.print_exc()
        detail = " ".join(f"{type(error).__name__}: {error}".split())
        print(f"broken\\t{name}\\t{detail}", flush=True)
        sys.exit(3)
"""


def _setting(env: dict[str, str], section: str, option: str) -> str:
    return env.get(f"AIRFLOW__{section.upper()}__{option.upper()}", "").strip()


def preload_lists(env: dict[str, str]) -> dict[tuple[str, ...], list[str]]:
    """Each distinct preload list of ``env``, with the components that would import it."""
    lists: dict[tuple[str, ...], list[str]] = {}
    for component in COMPONENTS:
        method = _setting(env, component, "mp_start_method") or _setting(
            env, "core", "mp_start_method"
        )
        if method != "forkserver":
            continue
        raw = _setting(env, component, "mp_forkserver_preload") or _setting(
            env, "core", "mp_forkserver_preload"
        )
        modules = tuple(name.strip() for name in raw.split(",") if name.strip())
        if modules:
            lists.setdefault(modules, []).append(component)
    return lists


@dataclass
class PreloadCheck:
    """The imports of the lists, running; :meth:`result` waits for them."""

    running: list[tuple[list[str], subprocess.Popen[str]]] = field(default_factory=list)

    def result(self, timeout: float = 300) -> list[str]:
        """Warnings for modules that do not import; raises StackError naming a module
        whose import fails otherwise (or the check itself, if it fails)."""
        warnings: list[str] = []
        try:
            for components, process in self.running:
                warnings += _outcome(components, process, timeout)
        finally:
            self.stop()
        return warnings

    def stop(self) -> None:
        """End what still runs (``up`` failed for another reason, or a check did)."""
        for _components, process in self.running:
            if process.poll() is None:
                process.kill()
            process.communicate()
        self.running = []


def _outcome(components: list[str], process: subprocess.Popen[str], timeout: float) -> list[str]:
    whose = f"the forkserver preload list of the {', '.join(components)}"
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StackError(f"importing {whose} took over {timeout:.0f} s") from None
    warnings, broken = [], []
    for line in out.splitlines():
        kind, name, detail = [*line.split("\t", 2), "", ""][:3]
        if kind == "missing":
            warnings.append(f"{whose}: {name} did not import ({detail}); the forkserver skips it")
        elif kind == "broken":
            broken.append(f"{name} ({detail})")
    trace = "\n".join(err.strip().splitlines()[-15:])
    if broken:
        raise StackError(
            f"{whose}: importing {broken[0]} fails, which would stop the forkserver the task "
            f"workers are started from (deploy/executor-local.env):\n{trace}"
        )
    if process.returncode != 0:
        raise StackError(f"checking {whose} failed (exit {process.returncode}):\n{trace}")
    return warnings


def start_check(
    env: dict[str, str], python: str = sys.executable, cwd: Path | None = None
) -> PreloadCheck:
    """Start importing each preload list of ``env`` (none: nothing to check), in ``cwd``
    (the components' folder, which is on a ``python -c`` interpreter's import path)."""
    check = PreloadCheck()
    try:
        for modules, components in preload_lists(env).items():
            process = subprocess.Popen(
                [python, "-c", _IMPORT_EACH, *modules],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            check.running.append((components, process))
    except BaseException:
        check.stop()
        raise
    return check


def main() -> int:
    """Check the lists of this process's environment (docker-compose's airflow-init, in
    the image, where the components run): one line per list, a warning per module that
    does not import; exit 1, naming the module, when one would stop the forkserver, and
    exit 1 when the check itself fails or takes too long, saying so."""
    env = dict(os.environ)
    lists = preload_lists(env)
    if not lists:
        print("preload: no forkserver preload list in this environment: nothing to check")
        return 0
    try:
        warnings = start_check(env).result()
    except StackError as error:
        print(f"preload: {error}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"preload: WARNING: {warning}")
    for modules, components in lists.items():
        print(f"preload: the list of the {', '.join(components)}: {len(modules)} modules")
    print(f"preload: {len(warnings)} did not import" if warnings else "preload: all import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
