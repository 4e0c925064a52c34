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
