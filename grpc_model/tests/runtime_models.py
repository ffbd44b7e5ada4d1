"""Tiny models trained here, in seconds, for the runtime tests: no committed binaries of unknown origin.

Each trainer saves its model in the library's own file format into a directory and returns the file's
name and the library's own outputs on the rows, by the V2 output names the runtime serves.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml

from grpc_model.tests.conftest import GREETER, TEST_VERSION

Outputs = dict[str, npt.NDArray[Any]]
Trainer = Callable[[Path, npt.NDArray[np.float32]], tuple[str, Outputs]]


def iris() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Iris, which ships with scikit-learn (nothing is downloaded), as FP32 rows: what the clients send."""
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn trains the test models")
    features, labels = datasets.load_iris(return_X_y=True)
    return features.astype(np.float32), labels.astype(np.int64)


def train_sklearn(directory: Path, rows: npt.NDArray[np.float32]) -> tuple[str, Outputs]:
    joblib = pytest.importorskip("joblib", reason="the sklearn runtime reads joblib files")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = iris()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels)
    joblib.dump(model, directory / "model.joblib")
    return "model.joblib", {"predict": model.predict(rows), "predict_proba": model.predict_proba(rows)}


def train_xgboost(directory: Path, rows: npt.NDArray[np.float32]) -> tuple[str, Outputs]:
    xgboost = pytest.importorskip("xgboost", reason="the xgboost runtime's library (group xgboost)")
    features, labels = iris()
    model = xgboost.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1).fit(features, labels)
    model.save_model(directory / "model.json")
    return "model.json", {"predict": model.predict(rows), "predict_proba": model.predict_proba(rows)}


def train_lightgbm(directory: Path, rows: npt.NDArray[np.float32]) -> tuple[str, Outputs]:
    lightgbm = pytest.importorskip("lightgbm", reason="the lightgbm runtime's library (group lightgbm)")
    features, labels = iris()
    model = lightgbm.LGBMClassifier(n_estimators=5, num_leaves=4, n_jobs=1, verbose=-1).fit(features, labels)
    model.booster_.save_model(directory / "model.txt")
    return "model.txt", {"predict": model.predict(rows), "predict_proba": model.predict_proba(rows)}


def train_onnx(directory: Path, rows: npt.NDArray[np.float32]) -> tuple[str, Outputs]:
    skl2onnx = pytest.importorskip("skl2onnx", reason="exports the scikit-learn test model to ONNX (dev group)")
    onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx runtime's library (group onnx)")
    from sklearn.linear_model import LogisticRegression

    features, labels = iris()
    model = LogisticRegression(max_iter=500).fit(features, labels)
    graph = skl2onnx.to_onnx(model, features[:1], options={"zipmap": False}, target_opset=17)
    (directory / "model.onnx").write_bytes(graph.SerializeToString())
    session = onnxruntime.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return "model.onnx", dict(zip(names, session.run(names, {session.get_inputs()[0].name: rows}), strict=True))


TRAINERS: dict[str, Trainer] = {
    "sklearn": train_sklearn,
    "xgboost": train_xgboost,
    "lightgbm": train_lightgbm,
    "onnx": train_onnx,
}


def write_runtime_bundle(root: Path, kind: str, file: str, **runtime: Any) -> Path:
    """The greeter's model.yaml turned into a runtime's: one CSV/JSON input, results.json, the runtime section."""
    spec = yaml.safe_load((GREETER / "model.yaml").read_text())
    spec["inputs"] = {"input.csv": {"acceptedMediaTypes": ["text/csv", "application/json"], "maxSize": "1M"}}
    spec["outputs"] = {"results.json": {"mediaType": "application/json", "maxSize": "1M"}}
    spec["runtime"] = {"kind": kind, "file": file, **({"trusted": True} if kind == "sklearn" else {}), **runtime}
    spec["features"]["maxBatchSize"] = 64
    (root / TEST_VERSION / "model.yaml").write_text(yaml.safe_dump(spec))
    return root


def trained_bundle(root: Path, kind: str, rows: npt.NDArray[np.float32]) -> tuple[Path, Outputs]:
    """A bundle under `root` serving a freshly trained model of `kind`, and the library's outputs on `rows`."""
    (root / TEST_VERSION).mkdir(parents=True)
    file, outputs = TRAINERS[kind](root / TEST_VERSION, rows)
    # LightGBM names the columns Column_0, ...; the others' are x0, ... (the runtime's default) already.
    names = {"features": [f"x{index}" for index in range(rows.shape[1])]} if kind == "lightgbm" else {}
    return write_runtime_bundle(root, kind, file, **names), outputs
