"""`grpc-model init NAME --from MODEL_FILE --sample DATA.csv`: a project that serves a model file and tests
itself, with no code written."""

import json
from pathlib import Path

import pytest
import yaml

from grpc_model.tests.conftest import copy_project
from grpc_model.tests.runtime_models import TRAINERS, iris
from grpc_model.tests.test_cli import files, grpc_model_cli

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def sample_csv(path: Path, rows: int = 12) -> Path:
    features = iris()[0][::7][:rows]
    lines = [",".join(COLUMNS)] + [",".join(repr(float(value)) for value in row) for row in features]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("kind", ["sklearn", "onnx", "lightgbm", "xgboost"])
def test_a_model_file_and_a_sample_make_a_project_whose_tests_pass(project: Path, tmp_path: Path, kind: str) -> None:
    file, _ = TRAINERS[kind](tmp_path, iris()[0][:1])
    sample = sample_csv(tmp_path / "rows.csv")
    trust = ["--trusted"] if kind == "sklearn" else []
    made = grpc_model_cli(
        project, "init", "Iris", "--from", str(tmp_path / file), "--sample", str(sample), "--force", *trust
    )
    assert made.returncode == 0, made.stdout + made.stderr
    spec = yaml.safe_load((project / "asset_bundle/0.1.0/model.yaml").read_text())
    assert spec["runtime"]["kind"] == kind
    assert spec["runtime"]["features"] == COLUMNS  # the model keeps no names of its own: the sample's
    case = project / "asset_bundle/0.1.0/test_cases/0001-rows"
    rows = json.loads((case / "results.json").read_text())["data"]["result"]
    assert len(rows) == 12

    tested = grpc_model_cli(project, "test")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "PASS in-process: 0001-rows" in tested.stdout


def test_a_pickle_needs_trusted_and_an_unknown_file_is_named(project: Path, tmp_path: Path) -> None:
    file, _ = TRAINERS["sklearn"](tmp_path, iris()[0][:1])
    before = files(project)
    refused = grpc_model_cli(project, "init", "Iris", "--from", str(tmp_path / file), "--force")
    assert refused.returncode == 2
    assert "pass --trusted if you trust where it came from" in refused.stderr
    (tmp_path / "model.bin").write_bytes(b"?")
    unknown = grpc_model_cli(project, "init", "Iris", "--from", str(tmp_path / "model.bin"), "--force")
    assert "model.bin: cannot tell which library wrote it" in unknown.stderr
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    broken = grpc_model_cli(project, "init", "Iris", "--from", str(tmp_path / "broken.onnx"), "--force")
    assert "the model file does not load" in broken.stderr
    assert files(project) == before  # nothing half-written, and --force replaced nothing
