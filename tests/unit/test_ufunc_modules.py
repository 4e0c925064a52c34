"""flight_delays.model.ufunc_modules: scipy's ufuncs are named before skops.io is imported,
and skops trusts the same names as it does in a process that never named them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.special

import flight_delays.model.fitted  # noqa: F401  (names the ufuncs, as a step's import does)
from flight_delays.model.ufunc_modules import name_scipy_ufuncs

REPO = Path(__file__).resolve().parents[2]

# Prints every list of trusted names skops.io builds at import, and the pickle of two
# scipy ufuncs, as JSON. FIRST is what the process imports before.
PROBE = """
import json, pickle, sys
{first}
import scipy.special
import skops.io._trusted_types as trusted
unnamed = sorted(
    attr for attr in dir(scipy.special)
    if type(getattr(scipy.special, attr)).__name__ == "ufunc"
    and getattr(getattr(scipy.special, attr), "__module__", None) is None
)
print(json.dumps({{
    "names": {{k: v for k, v in vars(trusted).items() if k.endswith("_TYPE_NAMES")}},
    "pickles": [pickle.dumps(u).hex() for u in (scipy.special.erf, scipy.special.expit)],
    "unnamed": unnamed,
    "modules": len(sys.modules),
}}))
"""


def _probe(first: str) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(first=first)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def plain() -> dict:
    """As skops runs without the project: scikit-learn loaded, then skops.io, which
    searches the loaded modules for each ufunc."""
    found = _probe("import sklearn.ensemble")
    assert found["unnamed"], "scipy names its ufuncs now: remove model/ufunc_modules.py"
    assert len(found["names"]["SCIPY_UFUNC_TYPE_NAMES"]) > 100
    return found


def test_skops_trusts_the_same_names_with_the_ufuncs_named(plain: dict) -> None:
    named = _probe("import flight_delays.model.fitted")  # names them, then imports skops.io
    assert named["unnamed"] == []
    assert named["names"] == plain["names"]
    assert named["pickles"] == plain["pickles"]


@pytest.mark.skipif(
    importlib.util.find_spec("airflow") is None,
    reason="Airflow is not installed here (the unit run on the newest Python has no Airflow)",
)
def test_the_names_are_the_same_with_airflow_loaded_first(plain: dict) -> None:
    airflow = "import airflow.sdk, airflow.models.dag, airflow.sdk.execution_time.task_runner"
    # As a task ran before: Airflow's modules first, then skops.io, which searches them.
    searched = _probe(f"{airflow}\nimport sklearn.ensemble")
    # As a task runs now: Airflow first, then the model module, which names the ufuncs
    # before it imports skops.io.
    task = _probe(f"{airflow}\nimport flight_delays.model.fitted")
    assert task["modules"] > plain["modules"] + 500  # Airflow was loaded first
    assert task["unnamed"] == []
    assert searched["names"] == plain["names"]
    assert task["names"] == plain["names"]
    assert task["pickles"] == plain["pickles"]


def test_each_public_ufunc_is_named_once() -> None:
    # This module imported the model module, which named them: nothing is left to name,
    # and a second call changes nothing.
    assert name_scipy_ufuncs() == 0
    for attr in dir(scipy.special):
        ufunc = getattr(scipy.special, attr)
        if isinstance(ufunc, np.ufunc):
            assert ufunc.__module__.startswith(("scipy.special", "numpy")), attr
            assert getattr(sys.modules[ufunc.__module__], ufunc.__name__) is ufunc, attr


class _Unnamed:
    """Stands for a ufunc without a ``__module__`` (the module-level ``np.ufunc`` is
    replaced by this class in the test below)."""

    __module__ = None  # kept by ``type()``: instances read None until one is set

    def __init__(self, name: str) -> None:
        self.__name__ = name


class _Refusing(_Unnamed):
    """An unnamed ufunc of a numpy whose ufuncs take no attributes."""

    @property
    def __module__(self) -> None:  # no setter: assigning raises AttributeError
        return None


def test_a_ufunc_that_refuses_the_name_is_skipped_and_the_others_are_named(monkeypatch) -> None:
    from flight_delays.model import ufunc_modules

    accepts, refuses, orphan = _Unnamed("fd_accepts"), _Refusing("fd_refuses"), _Unnamed("x")
    holder = type(sys)("scipy.special._fd_holder")
    holder.fd_accepts, holder.fd_refuses = accepts, refuses
    monkeypatch.setitem(sys.modules, holder.__name__, holder)
    for name, fake in (("fd_accepts", accepts), ("fd_refuses", refuses), ("fd_orphan", orphan)):
        monkeypatch.setattr(scipy.special, name, fake, raising=False)
    monkeypatch.setattr(ufunc_modules, "np", type(sys)("fake_numpy"))
    ufunc_modules.np.ufunc = _Unnamed

    # Only the one that takes the name counts; the refusal raises nothing, and a ufunc no
    # scipy.special module holds is left for skops' own search.
    assert ufunc_modules.name_scipy_ufuncs() == 1
    assert accepts.__module__ == "scipy.special._fd_holder"
    assert refuses.__module__ is None
    assert orphan.__module__ is None
