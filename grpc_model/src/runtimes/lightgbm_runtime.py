"""LightGBM: a Booster from its own text model file (no code runs when it loads)."""

from typing import Any

import lightgbm
import numpy as np

from grpc_model.src.runtime.signature import TensorSpec
from grpc_model.src.runtimes.config import RuntimeConfig, RuntimeLoadError
from grpc_model.src.runtimes.tabular import TABULAR_ACCEPTS, Arrays, TabularRuntime, classifier_outputs, labelled_row

CLASSIFIERS = ("binary", "multiclass", "multiclassova")


class LightGBMRuntime(TabularRuntime):
    kind = "lightgbm"

    def load(self, config: RuntimeConfig) -> None:
        with config.path.open("rb") as file:
            start = file.read(4)
        if start != b"tree":
            raise RuntimeLoadError(
                f"{config.path.name} is not a LightGBM text model (it starts with {start!r}, not 'tree'); save one "
                "with booster.save_model('model.txt')"
            )
        self.booster = lightgbm.Booster(model_file=str(config.path))
        self.objective = _header(config).get("objective", "").split(" ")[0]
        self.threads = config.threads
        self.width = self.booster.num_feature()

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("input", "FP64", (-1, self.width), TABULAR_ACCEPTS),)

    def own_feature_names(self, width: int) -> list[str]:
        return list(self.booster.feature_name())

    def predict(self, inputs: Arrays) -> Arrays:
        scores: Any = self.booster.predict(inputs["input"], num_threads=self.threads)
        if self.objective == "binary":  # LGBMClassifier's predict and predict_proba
            return classifier_outputs((scores > 0.5).astype(np.int64), np.stack([1 - scores, scores], axis=1))
        if self.objective in CLASSIFIERS:
            return classifier_outputs(np.argmax(scores, axis=1), scores)
        return classifier_outputs(scores, None)

    def row_result(self, outputs: Arrays, row: int) -> object:
        classes = range(outputs["predict_proba"].shape[1]) if "predict_proba" in outputs else []
        return labelled_row(outputs, row, list(classes))


def _header(config: RuntimeConfig) -> dict[str, str]:
    """The `key=value` lines that open a LightGBM text model, up to the first blank line."""
    header = {}
    with config.path.open(encoding="utf-8", errors="replace") as file:
        for line in file:
            if not line.strip():
                break
            key, _, value = line.strip().partition("=")
            header[key] = value
    return header
