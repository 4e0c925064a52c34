"""`up`'s check of the forkserver's preload list ([core] mp_forkserver_preload).

The LocalExecutor's workers come from a multiprocessing forkserver that imports the
listed modules first (deploy/executor-local.env). The forkserver skips a module that
raises ImportError, but any other error while importing one ends it, and the scheduler
then cannot start a worker: every task fails, and nothing names the module. So `up`
imports the list in a fresh interpreter, in the same order and with the stack's settings,
while PostgreSQL starts and the metastore migrates, and stops with the module's name and
its error before it starts Airflow. A module that is missing (an upgrade renamed it) is
only reported: the forkserver skips it too, and the tasks import what they need.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from .settings import StackError

#: The environment variable that holds the list (Airflow's [core] mp_forkserver_preload).
PRELOAD = "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD"

# What the forkserver does with each name (multiprocessing.forkserver.main): __import__,
# ImportError skipped. One line per module that did not import, tab-separated.
_IMPORT_EACH = """
import sys
for name in sys.argv[1:]:
    try:
        __import__(name)
    except ImportError as error:
        print(f"missing\\t{name}\\t{error}", flush=True)
    except BaseException as error:
        detail = " ".join(f"{type(error).__name__}: {error}".split())
        print(f"broken\\t{name}\\t{detail}", flush=True)
        sys.exit(3)
"""


@dataclass
class PreloadCheck:
    """The import of the list, running; :meth:`result` waits for it."""

    process: subprocess.Popen[str] | None
    modules: tuple[str, ...]

    def result(self, timeout: float = 300) -> list[str]:
        """Warnings for modules that are missing; raises StackError naming the module
        whose import fails otherwise (or the check itself, if it cannot run)."""
        if self.process is None:
            return []
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise StackError(
                f"importing {PRELOAD} took over {timeout:.0f} s: {', '.join(self.modules)}"
            ) from None
        warnings, broken = [], []
        for line in out.splitlines():
            kind, name, detail = [*line.split("\t", 2), "", ""][:3]
            if kind == "missing":
                warnings.append(f"{PRELOAD}: {name} is not installed ({detail}); skipped")
            elif kind == "broken":
                broken.append(f"{name} ({detail})")
        if broken or self.process.returncode != 0:
            what = broken[0] if broken else f"the check exited {self.process.returncode}"
            raise StackError(
                f"{PRELOAD}: importing {what} fails, which would stop the forkserver the "
                "scheduler starts its task workers from (deploy/executor-local.env)"
                + (f"\n{err.strip()[-2000:]}" if err.strip() and not broken else "")
            )
        return warnings

    def stop(self) -> None:
        """End the check early (``up`` failed for another reason)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def start_check(env: dict[str, str], python: str = sys.executable) -> PreloadCheck:
    """Start importing the modules of ``env``'s preload list (none: nothing to check)."""
    modules = tuple(name.strip() for name in env.get(PRELOAD, "").split(",") if name.strip())
    if not modules:
        return PreloadCheck(None, modules)
    process = subprocess.Popen(
        [python, "-c", _IMPORT_EACH, *modules],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return PreloadCheck(process, modules)
