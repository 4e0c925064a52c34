"""Name scipy.special's ufuncs before skops.io is imported, so that skops need not search
every loaded module for them.

Importing skops.io builds its list of trusted types, among them every public ufunc of
scipy.special. A scipy ufunc has no ``__module__``, so skops finds its module the way
pickle does (``skops.io._utils.whichmodule``): ``getattr(module, name, None)`` on each
module in ``sys.modules``, in order, until the first that holds the ufunc. In a process
that loaded Airflow first (``airflow dags test``, ``tasks test``, a task) that is about
230 walks over some 3,000 modules, each miss raising and dropping an AttributeError
inside ``getattr``: 2.3 s of the import there, 0.6 s in a process of the steps alone
(docs/benchmarks.md, "Airflow's overhead: where the time goes").

:func:`name_scipy_ufuncs` sets each such ufunc's ``__module__`` to the module skops
finds in a process without Airflow: the first ``scipy.special.*`` module in
``sys.modules`` that holds it (Python files a package after its submodules, so this is
the compiled module that defines it, such as ``scipy.special._ufuncs``). Skops then
reads the attribute and searches nothing, and its trusted names stay what they were;
``tests/unit/test_ufunc_modules.py`` compares the two lists across processes. Pickle
reads the same attribute and finds the same module it found before.
"""

from __future__ import annotations

import sys

import numpy as np


def name_scipy_ufuncs() -> int:
    """Give each public ufunc of scipy.special without a ``__module__`` the scipy module
    that holds it; return how many were named. A ufunc that already has one, or that
    refuses the attribute, is left as it is (skops then searches for it as before)."""
    import scipy.special

    holders = [
        (name, module)
        for name, module in list(sys.modules.items())
        if name.startswith("scipy.special.") and module is not None
    ]
    named = 0
    for attr in dir(scipy.special):
        ufunc = getattr(scipy.special, attr, None)
        if not isinstance(ufunc, np.ufunc) or getattr(ufunc, "__module__", None) is not None:
            continue
        name = ufunc.__name__  # skops looks the ufunc up by its own name, as pickle does
        holder = next((m for m, module in holders if getattr(module, name, None) is ufunc), None)
        if holder is None:
            continue
        try:
            ufunc.__module__ = holder
        except (AttributeError, TypeError):  # a numpy whose ufuncs take no attributes
            continue
        named += 1
    return named
