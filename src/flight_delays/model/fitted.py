"""A fitted model: its predictions, its file (skops, deflated) and the checks that file
passes before it is used. The train step writes models through it; the score, predict
and backtest steps read them back and predict with it, so no step imports another for
a model. The estimators themselves (the day-bagged ensemble) are the train step's."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import skops
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.ensemble._hist_gradient_boosting.common import (
    PREDICTOR_RECORD_DTYPE,
    X_BITSET_INNER_DTYPE,
)
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from flight_delays.base import schema
from flight_delays.base.errors import PipelineDataError
from flight_delays.model.ufunc_modules import name_scipy_ufuncs
from flight_delays.store import artifacts, io
from flight_delays.store.storage import ArtifactPath

# Importing skops.io builds its list of trusted types; for scipy.special's ufuncs, which
# have no __module__, skops would search every loaded module (about 3,000 in a task, where
# Airflow is loaded first): name_scipy_ufuncs() names them first, as skops would
# (model/ufunc_modules.py). Should a lookup still walk the modules, Airflow's
# deprecated-module shims (airflow.utils.timezone, trigger_rule, operator_resources,
# entry_points, airflow.serialization.serde) warn in their __getattr__ before checking that
# the name exists: DeprecatedImportWarnings (FutureWarnings, which skops' own
# DeprecationWarning filter misses) for attributes nobody uses. Dumping and loading models
# scans nothing (measured: no warning), so only this import is wrapped, and only warnings
# about airflow attributes are dropped; every other warning, here and later, still shows.
name_scipy_ufuncs()
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message=r"The `airflow\.[\w.]+` (attribute )?is deprecated",
        category=FutureWarning,
    )
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

log = logging.getLogger(__name__)

ENV_THREADS = "FLIGHT_DELAYS_THREADS"
DEFAULT_THREADS = 2

#: Types a model file may hold beyond those skops trusts by default (numpy, builtins and
#: scikit-learn estimators). Each one was checked with ``skops.io.get_untrusted_types`` on
#: a file the train step writes with the boosters of include/params.yaml (a test keeps the
#: list equal to what that file holds), and each is needed:
#: - TreePredictor: the fitted trees of HistGradientBoostingRegressor; without it there
#:   is no model. skops leaves it untrusted because its node arrays are read by compiled
#:   code without bounds checks: a crafted file could point a node at memory outside the
#:   tree. So it is trusted narrowly: :func:`check_trees` proves every tree's indices are
#:   in range (children after their parent, features and bitsets that exist) before the
#:   model is returned, on top of the file's SHA-256 from the registry.
#: - functools.partial + sklearn.utils.validation.check_array: a booster given
#:   ``categorical_features`` builds its own ColumnTransformer (``_preprocessor``) whose
#:   numeric columns go through FunctionTransformer(partial(check_array, ...)), so a
#:   booster of this pipeline cannot be stored without them. A partial may call any
#:   function skops trusts, so it is trusted narrowly: :func:`partials_outside` refuses
#:   a file holding a partial of anything but :data:`PARTIAL_FUNCTION`, before anything
#:   in the file is built.
#: - DayBaggedRegressor: the train step's own ensemble (a list of the boosters above,
#:   plus ints and floats); trusted for the same reason as the boosters it holds. Its
#:   name stays flight_delays.train's: the model files in the registry's store hold it.
TRUSTED_TYPES: tuple[str, ...] = (
    "flight_delays.train.DayBaggedRegressor",
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
)
#: The one function a trusted ``functools.partial`` may wrap (see :data:`TRUSTED_TYPES`).
PARTIAL_FUNCTION = "sklearn.utils.validation.check_array"

#: The trusted name of the train step's ensemble (:data:`TRUSTED_TYPES`).
BAGGED_REGRESSOR = "flight_delays.train.DayBaggedRegressor"


class UntrustedModelError(PipelineDataError):
    """A model file holds types outside the trusted list, or is not this pipeline."""


# --- threads ----------------------------------------------------------------------------


def thread_limit() -> int:
    """OpenMP/BLAS threads for fit and predict: $FLIGHT_DELAYS_THREADS, default 2."""
    raw = os.environ.get(ENV_THREADS, str(DEFAULT_THREADS))
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_THREADS} must be a positive integer, got {raw!r}") from exc
    if value < 1:
        raise ValueError(f"{ENV_THREADS} must be a positive integer, got {raw!r}")
    return value


@contextmanager
def bounded_threads() -> Iterator[None]:
    """Cap native thread pools: tasks may run in parallel on 2 cores, and unbounded
    OpenMP threads in HistGradientBoosting then slow each other down by 4-40x."""
    with threadpool_limits(limits=thread_limit()):
        yield


def check_feature_columns(frame: pd.DataFrame, what: str = "frame") -> None:
    """Raise ValueError naming every name in ``schema.FEATURES`` missing from ``frame``."""
    missing = [col for col in schema.FEATURES if col not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing feature column(s): {', '.join(missing)}")


class FeatureSetChangedError(ValueError):
    """The model was trained on a feature the pipeline no longer builds (removed or
    renamed since): it cannot score, and the caller retires it for the day."""


def predict(model: Pipeline, frame: pd.DataFrame) -> np.ndarray:
    """Predicted arrival delay (minutes) for each row of ``frame`` (needs schema.FEATURES).

    Categories not seen in training are encoded as missing, not an error. A feature added
    since the model was trained is ignored (the model selects its own columns); one it was
    trained on that schema.FEATURES no longer has raises FeatureSetChangedError."""
    check_feature_columns(frame)
    trained_on = getattr(model, "feature_names_in_", None)
    if trained_on is None:
        raise TypeError(f"{type(model).__name__} does not name the features it was fitted on")
    gone = [name for name in trained_on if name not in schema.FEATURES]
    if gone:
        raise FeatureSetChangedError(
            f"trained on feature(s) the pipeline no longer has: {', '.join(gone)}"
        )
    with bounded_threads():
        return np.asarray(model.predict(frame[schema.FEATURES]), dtype=float)


def serving_predictions(
    model: Pipeline, frame: pd.DataFrame
) -> tuple[np.ndarray | None, str | None]:
    """The champion's rule for a model that cannot score (score and predict share it):
    its predictions on ``frame`` and None; or None and the reason it is retired for the
    day, when it was trained on a feature the pipeline no longer builds (the caller
    falls back to the baseline and says so). Any other error is raised: it fails the
    task rather than quietly serving the baseline."""
    try:
        return predict(model, frame), None
    except FeatureSetChangedError as exc:
        return None, str(exc)


# --- model files ------------------------------------------------------------------------


def dump_model(model: Pipeline) -> bytes:
    """``model`` in skops format, deflate-compressed. The tree arrays compress about 4.6x
    (a nightly model of 10 bagged boosters: ~16 MB stored, ~3.5 MB deflated; of the 2
    shipped now, ~0.6 MB deflated) for ~0.1 s more to load."""
    return skops.io.dumps(model, compression=zipfile.ZIP_DEFLATED)


def save_model(model: Pipeline, path: str | ArtifactPath) -> ArtifactPath:
    """Write :func:`dump_model` of ``model`` to ``path`` (local or a URL) atomically."""
    return io.write_bytes(dump_model(model), path)


def load_model(
    path: str | ArtifactPath,
    expected_sha256: str | None = None,
    *,
    allow_unverified: bool = False,
) -> Pipeline:
    """Load a pipeline the train step wrote, trusting only :data:`TRUSTED_TYPES` beyond
    skops' defaults, each narrowly (:func:`partials_outside`, :func:`check_trees`).

    ``expected_sha256`` is required: the hash train recorded in the registry for this
    file (never one read from a file beside the model). Without it the file is refused,
    unless ``allow_unverified=True``, which only tests and tooling labelled as such
    pass, for a file they wrote themselves.

    The file is read once; its hash, the type checks and the model all come from those
    bytes, so the file cannot change between the check and the load. Raises
    MissingArtifactError (naming the train task) if the file is absent, and
    UntrustedModelError if no hash was given, if its SHA-256 is not ``expected_sha256``,
    if it holds any other untrusted type (named), or if it is not a Pipeline ending in
    HistGradientBoostingRegressor (or a DayBaggedRegressor of them) with sound trees.
    """
    if not expected_sha256 and not allow_unverified:
        # Checked before the file is read: a caller without a hash is a bug, whatever
        # the file holds.
        raise UntrustedModelError(
            f"refusing to load {path} without its expected SHA-256: pass expected_sha256, "
            "the hash train recorded in the registry (registry.find_challenger or "
            "registry.current_champion); only tests may pass allow_unverified=True"
        )
    path = io.require(path, artifacts.RUN_MODEL)  # a local path or a URL (s3://...)
    data = path.read_bytes()
    if expected_sha256:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise UntrustedModelError(
                f"model file {path} has SHA-256 {actual}, but the registry recorded "
                f"{expected_sha256} when it was trained: the file was changed after training"
            )
    else:
        log.warning("loading %s unverified (allow_unverified=True): tests only", path)
    # The schema is read first: it also tells a file that is no skops archive at all.
    if partials := partials_outside(data, path):
        raise _untrusted(path, data, partials)
    try:
        # skops audits every type of the file against ``trusted`` before it builds any
        # object. That audit is the check: a second one beforehand only to name the
        # types (get_untrusted_types walks the same tree) was about 30 % of a load
        # (docs/benchmarks.md), so the names are looked up only when a load is refused.
        model = skops.io.loads(data, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as exc:
        raise _untrusted(path, data, [], str(exc)) from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # Trusted types whose state does not fit them (a TreePredictor casts its nodes
        # when it is built): not a file this pipeline wrote.
        raise UntrustedModelError(f"{path} could not be built as a model: {exc}") from exc
    last = model.steps[-1][1] if isinstance(model, Pipeline) else None
    boosters = [last]
    if _qualified_name(last) == BAGGED_REGRESSOR:
        boosters = getattr(last, "estimators_", None)
    if not (
        isinstance(boosters, list)
        and boosters
        and all(isinstance(b, HistGradientBoostingRegressor) for b in boosters)
    ):
        raise UntrustedModelError(
            f"{path} holds a {type(model).__name__}, not this project's pipeline "
            "(Pipeline ending in HistGradientBoostingRegressor or a DayBaggedRegressor of them)"
        )
    for k, booster in enumerate(boosters):
        check_trees(booster, f"{path}, booster {k}")
    return model


def _untrusted(
    path: object, data: bytes, partials: list[str], detail: str = ""
) -> UntrustedModelError:
    """The refusal of a model file, naming every type of it outside the trusted list and
    every partial :func:`partials_outside` found (skops' own message if none is named)."""
    names = sorted(set(skops.io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    names = names + partials or [detail]
    return UntrustedModelError(
        f"refusing to load {path}: it holds type(s) outside the trusted list: {', '.join(names)}"
    )


def partials_outside(data: bytes, where: object = "model file") -> list[str]:
    """Every ``functools.partial`` in the skops file ``data`` that wraps something other
    than :data:`PARTIAL_FUNCTION`, named ``functools.partial of <what it wraps>``.

    Read from the file's schema, so nothing in the file is built to find them."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            tree = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UntrustedModelError(f"{where} is not a skops model file: {exc}") from exc
    found: list[str] = []
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if (node.get("__module__"), node.get("__class__")) == ("functools", "partial"):
            content = node.get("content")
            func = content.get("func") if isinstance(content, dict) else None
            name = (
                f"{func.get('__module__')}.{func.get('__class__')}"
                if isinstance(func, dict)
                else repr(func)
            )
            if name != PARTIAL_FUNCTION:
                found.append(f"functools.partial of {name}")
        stack.extend(node.values())
    return sorted(set(found))


def check_trees(booster: HistGradientBoostingRegressor, where: str) -> None:
    """Raise UntrustedModelError unless every tree of the fitted ``booster`` is sound:
    node records of sklearn's own dtype, each split's children after it and inside the
    tree (so prediction walks forward and stops), its feature one of the booster's
    ``n_features_in_`` columns, and a categorical split's bitset one the tree holds.

    These are the indices the compiled predictor follows without bounds checks (why
    skops does not trust TreePredictor by default)."""
    n_features = getattr(booster, "n_features_in_", None)
    predictors = getattr(booster, "_predictors", None)
    if not isinstance(n_features, int) or not isinstance(predictors, list) or not predictors:
        raise UntrustedModelError(f"{where}: the booster holds no fitted trees")
    for i, iteration in enumerate(predictors):
        for tree in iteration if isinstance(iteration, list) else [iteration]:
            problem = _tree_problem(tree, n_features)
            if problem:
                raise UntrustedModelError(f"{where}, TreePredictor of iteration {i}: {problem}")


def _tree_problem(tree: Any, n_features: int) -> str | None:
    """What is wrong with ``tree`` (see :func:`check_trees`), or None."""
    if not isinstance(tree, TreePredictor):
        return f"a {type(tree).__name__}, not a TreePredictor"
    nodes = tree.nodes
    if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE:
        return "its nodes are not sklearn's node records"
    if nodes.ndim != 1 or len(nodes) == 0:
        return f"its nodes have shape {getattr(nodes, 'shape', None)}"
    for name in ("binned_left_cat_bitsets", "raw_left_cat_bitsets"):
        bitsets = getattr(tree, name)
        if not (
            isinstance(bitsets, np.ndarray)
            and bitsets.dtype == X_BITSET_INNER_DTYPE
            and bitsets.ndim == 2
            and bitsets.shape[1] == 8
        ):
            return f"{name} is not an (n, 8) array of uint32"
    split = np.flatnonzero(nodes["is_leaf"] == 0)
    n = len(nodes)
    for child in ("left", "right"):
        to = nodes[child][split].astype(np.int64)
        bad = split[(to <= split) | (to >= n)]
        if len(bad):
            k = int(bad[0])
            return f"node {k} has {child} child {int(nodes[child][k])}, not in {k + 1}..{n - 1}"
    feature = nodes["feature_idx"][split]
    bad = split[(feature < 0) | (feature >= n_features)]
    if len(bad):
        k = int(bad[0])
        return f"node {k} splits on feature {int(nodes['feature_idx'][k])} of {n_features}"
    categorical = split[nodes["is_categorical"][split] != 0]
    n_bitsets = min(len(tree.binned_left_cat_bitsets), len(tree.raw_left_cat_bitsets))
    bad = categorical[nodes["bitset_idx"][categorical] >= n_bitsets]
    if len(bad):
        k = int(bad[0])
        return f"node {k} uses bitset {int(nodes['bitset_idx'][k])} of {n_bitsets}"
    return None


def library_versions() -> dict[str, str]:
    """Versions that decide whether a model file loads and predicts the same way."""
    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "skops": skops.__version__,
    }


def _qualified_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"
