"""The artifact catalog (flight_delays.store.artifacts): paths, producers, the clean command,
the documented table, and that the six steps open nothing under the root outside it."""

from __future__ import annotations

import ast
import re
import sys
from datetime import date
from pathlib import Path

import pytest

from flight_delays import cli
from flight_delays.store import artifacts, io
from flight_delays.store.config import PARAMS_RELATIVE, ProjectPaths, project_root

REPO = Path(__file__).resolve().parents[2]
DAY = date(2013, 3, 31)
RUN = "scheduled__2013-04-01T06:00:00+00:00"
SHA = "ab" * 32

# A short window on a few real 2013 days, one booster: the six steps in seconds.
PARAMS = """\
ingest: {window_days: 8}
split: {holdout_days: 2, recent_days: 2, history_days: 4}
train: {max_iter: 20, learning_rate: 0.2, min_samples_leaf: 20, bagging_models: 1}
"""
SEEDED = (date(2013, 3, 22), date(2013, 4, 2))


def test_an_entry_resolves_under_the_root_for_a_day_and_run(tmp_path: Path) -> None:
    assert artifacts.FEATURES.path(tmp_path, DAY) == (
        tmp_path / "data" / "processed" / "ds=2013-03-31" / "features.parquet"
    )
    # run ids are percent-encoded, so none can name another folder
    model = artifacts.resolve("run_model", tmp_path, DAY, "a/../b c")
    assert model == tmp_path / "models" / "ds=2013-03-31" / "run=a%2F..%2Fb%20c" / "model.skops"
    assert artifacts.resolve(artifacts.STORED_MODEL, tmp_path, sha256=SHA).name == f"{SHA}.skops"


def test_an_entry_without_its_day_or_run_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs day"):
        artifacts.METRICS.path(tmp_path)
    with pytest.raises(ValueError, match="run id"):
        artifacts.RUN_MODEL.path(tmp_path, DAY, "")
    with pytest.raises(KeyError):
        artifacts.resolve("no_such_artifact", tmp_path, DAY)


def test_a_template_outside_the_root_or_of_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="under the root"):
        artifacts.Artifact("x", "../x.json", "ingest", "json", True, "")
    with pytest.raises(ValueError, match="format"):
        artifacts.Artifact("x", "x.txt", "ingest", "text", True, "")


def test_project_paths_hold_the_roots_and_name_no_artifact(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path)
    public = {name for name in dir(paths) if not name.startswith("_")}
    assert public == {"root", "home", "source_db"}  # an artifact is named by the catalog
    assert paths.source_db == artifacts.SOURCE_DB.path(tmp_path)


def _code_strings(tree: ast.AST) -> list[ast.Constant]:
    """The string constants of a module that are not docstrings."""
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
    ]


def test_no_module_but_the_catalog_spells_an_artifacts_name() -> None:
    """One way to address an artifact (issue 21): no code outside the catalog names a
    file of it or a day folder (``ds=``). Allowed: io.py reading the day back out of a
    path (for an error message), and the DAG's own documentation (doc_md)."""
    repo = Path(__file__).resolve().parents[2]
    names = {e.filename for e in artifacts.CATALOG if "{" not in e.filename and "." in e.filename}
    allowed = {("io.py", "ds="), ("flight_delays_pipeline.py", "ds=")}
    modules = [*(repo / "src").rglob("*.py"), *(repo / "dags").glob("*.py"),
               *(repo / "plugins").glob("*.py")]  # fmt: skip
    found = []
    for module in modules:
        if module.name == "artifacts.py":
            continue
        for node in _code_strings(ast.parse(module.read_text())):
            for name in [n for n in names if n in node.value] + ["ds="] * ("ds=" in node.value):
                if (module.name, name) not in allowed:
                    found.append(f"{module.relative_to(repo)}:{node.lineno}: {name}")
    assert found == []


def test_a_missing_input_names_its_entrys_producer(tmp_path: Path) -> None:
    missing = artifacts.DAY_MODEL_CARD.path(tmp_path, DAY)
    with pytest.raises(io.MissingArtifactError) as info:
        io.read_json(missing, artifacts.DAY_MODEL_CARD)
    assert info.value.task == "score"
    assert "`python -m flight_delays run score --day 2013-03-31`" in str(info.value)


def test_every_producer_is_a_step_or_a_named_command() -> None:
    producers = {*cli.STEPS, "seed", "backtest", "predict"}
    assert {entry.producer for entry in artifacts.CATALOG} <= producers
    assert len(artifacts.BY_NAME) == len(artifacts.CATALOG)


def test_match_knows_instances_and_temporary_names_and_nothing_else() -> None:
    assert artifacts.match("data/output/ds=2013-03-31/metrics.json") is artifacts.METRICS
    assert artifacts.match("data/output/ds=2013-03-31/.metrics.json.x1_y2.tmp") is (
        artifacts.METRICS
    )
    assert artifacts.match("data/raw/.ds=2013-03-31.k2j3.tmp/flights.parquet") is (
        artifacts.RAW_FLIGHTS
    )
    assert artifacts.match(f"models/ds=2013-03-31/run={RUN}/model.skops") is artifacts.RUN_MODEL
    # what a superseded folder holds is its own: copies of earlier partitions
    assert artifacts.match("data/raw/superseded/ds=2013-03-31/v2/quarantine/summary.json") is (
        artifacts.SUPERSEDED
    )
    assert artifacts.match("data/output/ds=2013-03-31/notes.txt") is None
    assert artifacts.match("data/output/ds=not-a-day/metrics.json") is None
    assert artifacts.match("models/ds=2013-03-31/run=x/other.skops") is None


def _populate(root: Path) -> dict[str, Path]:
    """One instance of every entry under ``root``."""
    made = {}
    for entry in artifacts.CATALOG:
        path = entry.path(root, DAY, RUN if "run_id" in entry.placeholders else None, sha256=SHA)
        if entry.format == "folder":
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
        made[entry.name] = path
    (root / "data" / "raw" / "superseded" / "ds=2013-03-31" / "v1").mkdir(parents=True)
    return made


def test_clean_deletes_the_derived_artifacts_and_keeps_the_rest(tmp_path: Path) -> None:
    made = _populate(tmp_path)
    assert artifacts.main(["clean", "--root", str(tmp_path)]) == 0
    for name, path in made.items():
        assert path.exists() != artifacts.BY_NAME[name].derived, name
    # inputs and the content-addressed store stay, with what they hold
    assert (tmp_path / "data" / "raw" / "superseded" / "ds=2013-03-31" / "v1").is_dir()
    assert artifacts.STORED_MODEL.path(tmp_path, sha256=SHA).is_file()
    assert artifacts.SOURCE_DB.path(tmp_path).is_file()


def test_clean_of_an_empty_root_deletes_nothing(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert artifacts.clean(tmp_path) == []
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_make_clean_artifacts_calls_the_catalogs_clean() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nclean-artifacts:", 1)[1].split("\n\n", 1)[0]
    assert "-m flight_delays.store.artifacts clean" in recipe
    assert "rm -" not in recipe


def test_the_documented_table_is_the_catalog() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    found = re.search(
        r"<!-- catalog table: python -m flight_delays.store.artifacts table -->\n(.*?)"
        r"<!-- end of catalog table -->",
        text,
        re.S,
    )
    assert found, "docs/architecture.md lost its catalog table markers"
    assert found.group(1) == artifacts.markdown_table(), (
        "docs/architecture.md's catalog table differs from the catalog: paste the output "
        "of `python -m flight_delays.store.artifacts table` between its markers"
    )


def _under(opened: list[str], root: Path) -> set[str]:
    """The opened paths under ``root``, relative to it (POSIX)."""
    resolved = root.resolve()
    found = set()
    for name in opened:
        path = Path(name)
        if path.is_absolute() and path.resolve().is_relative_to(resolved):
            found.add(path.resolve().relative_to(resolved).as_posix())
    return found


def _strays(relative: set[str]) -> list[str]:
    """The paths no catalog entry matches (the parameter file is the one input)."""
    return sorted(p for p in relative if p != PARAMS_RELATIVE.as_posix() and not artifacts.match(p))


def test_the_open_check_reports_a_path_outside_the_catalog(tmp_path: Path) -> None:
    opened = [
        str(tmp_path / "data" / "output" / "ds=2013-03-31" / "metrics.json"),
        str(tmp_path / "data" / "output" / "ds=2013-03-31" / "scratch.csv"),
        str(tmp_path / "include" / "params.yaml"),
        "/usr/lib/python3/os.py",
    ]
    assert _strays(_under(opened, tmp_path)) == ["data/output/ds=2013-03-31/scratch.csv"]


@pytest.fixture(scope="module")
def warehouse(seeded_warehouse) -> Path:
    return seeded_warehouse(*SEEDED)


def test_the_six_steps_open_only_catalog_paths(
    warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "project"
    (root / "include").mkdir(parents=True)
    (root / PARAMS_RELATIVE).write_text(PARAMS)
    db = artifacts.SOURCE_DB.path(root)
    db.parent.mkdir(parents=True)
    db.write_bytes(warehouse.read_bytes())
    monkeypatch.delenv("FLIGHT_DELAYS_SOURCE_URL", raising=False)  # the embedded warehouse
    opened: list[str] = []
    watching = True

    def hook(event: str, args: tuple) -> None:
        if watching and event in ("open", "sqlite3.connect") and args:
            target = args[0]
            if isinstance(target, (str, bytes, Path)):
                opened.append(target.decode() if isinstance(target, bytes) else str(target))

    sys.addaudithook(hook)  # hooks cannot be removed: `watching` turns this one off
    try:
        results = cli.run_steps(cli.STEPS, DAY, root=root)
    finally:
        watching = False
    assert set(results) == set(cli.STEPS)
    under_root = _under(opened, root)
    strays = _strays(under_root)
    assert not strays, f"the steps opened paths the artifact catalog does not name: {strays}"
    # the hook saw the steps' files, so an empty list above means something
    seen = {artifacts.match(p) for p in under_root} - {None}
    for entry in (artifacts.MANIFEST, artifacts.FEATURES, artifacts.TRAIN_TABLE,
                  artifacts.RUN_MODEL, artifacts.METRICS, artifacts.REPORT,
                  artifacts.SOURCE_DB):  # fmt: skip
        assert entry in seen, entry.name


def test_the_root_is_the_callers_then_the_environments_then_the_anchors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    anchor = tmp_path / "checkout" / "dags" / "pipeline.py"
    monkeypatch.setenv("FLIGHT_DELAYS_HOME", str(tmp_path / "home"))
    assert project_root(tmp_path / "given", anchor=anchor) == tmp_path / "given"
    assert project_root(anchor=anchor) == tmp_path / "home"
    monkeypatch.delenv("FLIGHT_DELAYS_HOME")
    assert project_root(anchor=anchor) == tmp_path / "checkout"
    monkeypatch.chdir(tmp_path)
    assert project_root() == tmp_path


def test_the_dag_and_the_plugin_find_the_root_through_config() -> None:
    for path in (
        REPO / "dags" / "flight_delays_pipeline.py",
        REPO / "plugins" / "model_reports.py",
    ):
        text = path.read_text()
        assert "project_root(anchor=__file__)" in text, path.name
        assert 'environ.get("FLIGHT_DELAYS_HOME")' not in text, path.name


def test_asset_uris_follow_the_artifact_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FLIGHT_DELAYS_STORAGE_URL", raising=False)
    features = artifacts.FEATURES
    assert artifacts.asset_uri(features, tmp_path) == f"{tmp_path.as_uri()}/data/processed"
    monkeypatch.setenv("FLIGHT_DELAYS_STORAGE_URL", "s3://bucket/prefix/")
    assert artifacts.asset_uri(features, tmp_path) == "s3://bucket/prefix/data/processed"
    assert (
        artifacts.asset_uri(artifacts.MODEL_STORE, tmp_path) == "s3://bucket/prefix/models/registry"
    )
    # A relative folder is under the project root, as storage_root takes it.
    uri = artifacts.asset_uri(features, tmp_path, storage_url="shared")
    assert uri == f"{(tmp_path / 'shared').as_uri()}/data/processed"
