"""XGBoost: a Booster from its own JSON or UBJ model file (no code runs when it loads)."""

import json
from typing import Any

import numpy as np
import xgboost

from grpc_model.src.runtime.signature import TensorSpec
from grpc_model.src.runtimes.config import RuntimeConfig, RuntimeLoadError
from grpc_model.src.runtimes.tabular import TABULAR_ACCEPTS, Arrays, TabularRuntime, classifier_outputs, labelled_row

FORMATS = (".json", ".ubj")


class XGBoostRuntime(TabularRuntime):
    kind = "xgboost"

    def load(self, config: RuntimeConfig) -> None:
        if config.path.suffix.lower() not in FORMATS:
            raise RuntimeLoadError(
                f"{config.path.name}: the xgboost runtime reads XGBoost's own model files ({', '.join(FORMATS)}); "
                "save one with model.save_model('model.json')"
            )
        self.booster = xgboost.Booster(model_file=str(config.path))
        self.booster.set_param({"nthread": config.threads})
        self.objective = json.loads(self.booster.save_config())["learner"]["objective"]["name"]
        self.width = self.booster.num_features()

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("input", "FP64", (-1, self.width), TABULAR_ACCEPTS),)

    def own_feature_names(self, width: int) -> list[str]:
        names = self.booster.feature_names
        return list(names) if names else super().own_feature_names(width)

    def predict(self, inputs: Arrays) -> Arrays:
        scores: Any = self.booster.inplace_predict(inputs["input"], validate_features=False)
        if self.objective == "binary:logistic":  # XGBClassifier's predict and predict_proba
            return classifier_outputs((scores > 0.5).astype(np.int64), np.stack([1 - scores, scores], axis=1))
        if self.objective == "multi:softprob":
            return classifier_outputs(np.argmax(scores, axis=1), scores)
        return classifier_outputs(scores, None)

    def row_result(self, outputs: Arrays, row: int) -> object:
        classes = range(outputs["predict_proba"].shape[1]) if "predict_proba" in outputs else []
        return labelled_row(outputs, row, list(classes))
