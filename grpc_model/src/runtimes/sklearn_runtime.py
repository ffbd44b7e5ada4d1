"""scikit-learn: an estimator or pipeline from a joblib or pickle file (only when model.yaml trusts it)."""

from typing import Any

import joblib
import numpy as np

from grpc_model.src.runtime.signature import TensorSpec
from grpc_model.src.runtimes.config import RuntimeConfig, RuntimeLoadError
from grpc_model.src.runtimes.tabular import TABULAR_ACCEPTS, Arrays, TabularRuntime, classifier_outputs, labelled_row


class SklearnRuntime(TabularRuntime):
    kind = "sklearn"

    def load(self, config: RuntimeConfig) -> None:
        # model.yaml's runtime.trusted is checked with the rest of model.yaml: this runs the file's code.
        self.model: Any = joblib.load(config.path)
        if not callable(getattr(self.model, "predict", None)):
            raise RuntimeLoadError(f"{config.path.name} holds a {type(self.model).__name__}, which has no predict()")
        width = getattr(self.model, "n_features_in_", None)
        if not isinstance(width, int | np.integer):
            raise RuntimeLoadError(
                f"{type(self.model).__name__} does not say how many features it takes (no n_features_in_): "
                "is it fitted?"
            )
        self.width = int(width)
        self.names = getattr(self.model, "feature_names_in_", None)
        if self.names is not None and config.features and list(config.features) != [str(n) for n in self.names]:
            raise RuntimeLoadError(
                f"runtime.features must be the names the model was fitted with, in order: {list(self.names)}"
            )
        self.has_proba = callable(getattr(self.model, "predict_proba", None)) and hasattr(self.model, "classes_")
        self.classes = list(self.model.classes_.tolist()) if self.has_proba else []

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("input", "FP64", (-1, self.width), TABULAR_ACCEPTS),)

    def own_feature_names(self, width: int) -> list[str]:
        return [str(name) for name in self.names] if self.names is not None else super().own_feature_names(width)

    def predict(self, inputs: Arrays) -> Arrays:
        rows = inputs["input"]
        if self.names is not None:
            rows = _frame(rows, self.names)
        probabilities = self.model.predict_proba(rows) if self.has_proba else None
        return classifier_outputs(np.asarray(self.model.predict(rows)), probabilities)

    def row_result(self, outputs: Arrays, row: int) -> object:
        return labelled_row(outputs, row, self.classes)


def _frame(rows: Any, names: Any) -> Any:
    """A model fitted on a DataFrame checks the column names it is given (pandas, when it is installed)."""
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows, columns=names)
