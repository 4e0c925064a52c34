"""flight_delays.model.model_file.load_model: what a model file must prove before it is loaded.

The hash is mandatory; the types beyond skops' defaults are exactly those the pipeline
writes, and the two that skops flags as risky (TreePredictor, functools.partial) are
trusted only in the shape this pipeline gives them. Each crafted file below is loaded
with its own correct SHA-256, so what refuses it is the check under test, not the hash.
"""

from __future__ import annotations

import copy
import functools
import logging
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_array

from flight_delays import train
from flight_delays.model import fitted as model_file
from flight_delays.store import io
from flight_delays.store.config import TrainSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
FAST = TrainSettings(
    max_iter=10, min_samples_leaf=5, max_leaf_nodes=15, max_features=1.0, bagging_models=1
)


@pytest.fixture(scope="module")
def fitted(feature_frame_factory) -> Pipeline:
    return train.fit_model(feature_frame_factory(300, seed=3), FAST)


def test_trusted_types_are_what_the_default_boosters_need(tmp_path, feature_frame_factory):
    # The boosters of the shipped include/params.yaml (two day-bagged boosters), on a
    # small frame: the types a file holds depend on the model's shape, not on its size.
    settings = load_settings(REPO).train
    assert settings.bagging_models > 1
    model = train.fit_model(feature_frame_factory(300, seed=4), settings)
    path = model_file.save_model(model, tmp_path / "model.skops")
    # Each trusted type is needed (the file holds it) and nothing else is held.
    assert sorted(skops.io.get_untrusted_types(file=path)) == sorted(model_file.TRUSTED_TYPES)
    # The partials are the boosters' own input checks, and only those.
    assert model_file.partials_outside(path.read_bytes()) == []
    assert isinstance(model_file.load_model(path, expected_sha256=io.sha256(path)), Pipeline)


def test_a_file_without_its_expected_hash_is_refused(fitted, tmp_path) -> None:
    path = model_file.save_model(fitted, tmp_path / "model.skops")
    for missing in (None, ""):
        with pytest.raises(model_file.UntrustedModelError, match="without its expected SHA-256"):
            model_file.load_model(path, expected_sha256=missing)
    with pytest.raises(model_file.UntrustedModelError, match="without its expected SHA-256"):
        model_file.load_model(path)  # the call signature of a caller that forgot it


def test_a_wrong_hash_is_refused_even_when_unverified_loads_are_allowed(fitted, tmp_path):
    path = model_file.save_model(fitted, tmp_path / "model.skops")
    with pytest.raises(model_file.UntrustedModelError, match="changed after training"):
        model_file.load_model(path, expected_sha256="f" * 64, allow_unverified=True)


def test_an_unverified_load_must_be_asked_for_and_is_logged(fitted, tmp_path, caplog) -> None:
    path = model_file.save_model(fitted, tmp_path / "model.skops")
    with caplog.at_level(logging.WARNING, logger="flight_delays.train"):
        model = model_file.load_model(path, allow_unverified=True)
    assert isinstance(model, Pipeline)
    assert "unverified" in caplog.text and str(path) in caplog.text


@pytest.mark.parametrize(
    ("wrapped", "named"),
    [
        (np.add, "functools.partial of numpy.add"),  # a ufunc skops trusts by default
        (np.sqrt, "functools.partial of numpy.sqrt"),
    ],
)
def test_a_partial_of_anything_but_check_array_is_refused(fitted, tmp_path, wrapped, named):
    smuggled = copy.deepcopy(fitted)
    smuggled.extra = functools.partial(wrapped, 1.0)
    path = tmp_path / "model.skops"
    skops.io.dump(smuggled, path)
    # skops alone would load it: every type in it is on the trusted list.
    assert set(skops.io.get_untrusted_types(file=path)) <= set(model_file.TRUSTED_TYPES)
    with pytest.raises(model_file.UntrustedModelError, match=named):
        model_file.load_model(path, expected_sha256=io.sha256(path))


def test_a_partial_of_check_array_is_what_the_booster_holds(fitted) -> None:
    booster = fitted.named_steps["model"]
    func = booster._preprocessor.named_transformers_["numerical"].func
    assert isinstance(func, functools.partial) and func.func is check_array


def _with_first_tree(model: Pipeline, change) -> Pipeline:
    """A copy of ``model`` whose first tree with a split has ``change(nodes, tree)``
    applied to a copy of its nodes."""
    crafted = copy.deepcopy(model)
    booster = crafted.named_steps["model"]
    tree = next(t for it in booster._predictors for t in it if not t.nodes["is_leaf"][0])
    nodes = tree.nodes.copy()
    change(nodes, tree)
    tree.nodes = nodes
    return crafted


def _categorical_split(nodes, tree) -> None:
    nodes["is_categorical"][0] = 1
    nodes["bitset_idx"][0] = len(tree.raw_left_cat_bitsets) + 3


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda n, t: n["left"].__setitem__(0, 10**6), r"node 0 has left child 1000000, not in"),
        (lambda n, t: n["right"].__setitem__(0, 0), r"node 0 has right child 0"),  # a loop
        (lambda n, t: n["feature_idx"].__setitem__(0, 999), r"node 0 splits on feature 999"),
        (lambda n, t: n["feature_idx"].__setitem__(0, -1), r"node 0 splits on feature -1"),
        (_categorical_split, r"node 0 uses bitset \d+ of \d+"),
    ],
)
def test_a_tree_pointing_outside_itself_is_refused(fitted, tmp_path, change, reason) -> None:
    path = model_file.save_model(_with_first_tree(fitted, change), tmp_path / "model.skops")
    # The file holds only trusted types: skops alone would load it.
    assert set(skops.io.get_untrusted_types(file=path)) <= set(model_file.TRUSTED_TYPES)
    with pytest.raises(
        model_file.UntrustedModelError, match=f"TreePredictor of iteration \\d+: {reason}"
    ):
        model_file.load_model(path, expected_sha256=io.sha256(path))


def test_tree_nodes_of_another_dtype_are_refused(fitted, tmp_path) -> None:
    crafted = copy.deepcopy(fitted)
    tree = crafted.named_steps["model"]._predictors[0][0]
    tree.nodes = np.zeros(3, dtype=[("value", "<f8"), ("left", "<u4")])
    path = model_file.save_model(crafted, tmp_path / "model.skops")
    # sklearn's own TreePredictor.__setstate__ refuses to cast them: a clear error too.
    with pytest.raises(model_file.UntrustedModelError, match="could not be built as a model"):
        model_file.load_model(path, expected_sha256=io.sha256(path))


def test_a_file_that_is_not_a_skops_archive_is_refused(tmp_path) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(b"not a zip file")
    with pytest.raises(
        model_file.UntrustedModelError, match=r"model\.skops is not a skops model file"
    ):
        model_file.load_model(path, expected_sha256=io.sha256(path))


def test_tree_bitsets_of_another_shape_are_refused(fitted, tmp_path) -> None:
    crafted = copy.deepcopy(fitted)
    tree = crafted.named_steps["model"]._predictors[0][0]
    tree.raw_left_cat_bitsets = np.zeros((2, 4), dtype=np.uint32)  # 4 words, not 8
    path = model_file.save_model(crafted, tmp_path / "model.skops")
    with pytest.raises(
        model_file.UntrustedModelError, match=r"raw_left_cat_bitsets is not an \(n, 8\) array"
    ):
        model_file.load_model(path, expected_sha256=io.sha256(path))


def test_check_trees_refuses_a_booster_without_sound_trees(fitted) -> None:
    # In memory, where no TreePredictor.__setstate__ casts the nodes first.
    booster = copy.deepcopy(fitted.named_steps["model"])
    booster._predictors[0][0].nodes = np.zeros(3, dtype=[("value", "<f8"), ("left", "<u4")])
    with pytest.raises(
        model_file.UntrustedModelError, match="here, TreePredictor of iteration 0: its"
    ):
        model_file.check_trees(booster, "here")
    booster._predictors = [[object()]]
    with pytest.raises(model_file.UntrustedModelError, match="a object, not a TreePredictor"):
        model_file.check_trees(booster, "here")
    booster._predictors = []
    with pytest.raises(
        model_file.UntrustedModelError, match="here: the booster holds no fitted trees"
    ):
        model_file.check_trees(booster, "here")
