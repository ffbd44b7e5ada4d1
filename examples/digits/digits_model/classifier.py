"""The learned arrays and the three things computed from them: class scores, attributions, drift.

Everything is one numpy expression over the whole batch (an (n, 64) matrix), so a batch of
32 costs about what one item costs. The arrays come from `examples/digits/train.py`
(scikit-learn), saved as plain numpy arrays: serving needs numpy, not scikit-learn.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .images import INK_SCALE, SIDE

WEIGHTS = Path(__file__).with_name("weights.npz")
ARRAYS = ("classes", "coef", "intercept", "mean", "precision", "drift_threshold")
TOP_CLASSES = 3
DECIMALS = 6  # JSON answers rounded, so a case's expected output does not churn in the last digits


@dataclass(frozen=True)
class Classifier:
    """Multinomial logistic regression on ink/16 (0..1), with the training data's mean and precision matrix."""

    classes: NDArray[np.str_]  # (k,)
    coef: NDArray[np.float64]  # (k, 64)
    intercept: NDArray[np.float64]  # (k,)
    mean: NDArray[np.float64]  # (64,)
    precision: NDArray[np.float64]  # (64, 64), the inverse of the shrunk covariance
    drift_threshold: float  # the 99th percentile of the training images' own distances

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> "Classifier":
        """Reads the arrays once; a missing or incomplete file is named with what it lacks."""
        with np.load(path, allow_pickle=False) as arrays:
            missing = [name for name in ARRAYS if name not in arrays.files]
            if missing:
                raise ValueError(f"{path}: missing array(s) {missing}; retrain with examples/digits/train.py")
            return cls(
                classes=arrays["classes"].astype(str),
                coef=arrays["coef"].astype(np.float64),
                intercept=arrays["intercept"].astype(np.float64),
                mean=arrays["mean"].astype(np.float64),
                precision=arrays["precision"].astype(np.float64),
                drift_threshold=float(arrays["drift_threshold"]),
            )

    def probabilities(self, inks: NDArray[np.float64]) -> NDArray[np.float64]:
        """(n, 64) ink values 0..16 -> (n, k) softmax probabilities."""
        logits = self._features(inks) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))

    def attributions(self, inks: NDArray[np.float64], predicted: NDArray[np.intp]) -> NDArray[np.float64]:
        """(n, 64): each pixel's term coef[class, pixel] * x[pixel] of the predicted class's logit.

        For a linear model this is exactly gradient x input: the terms plus the intercept add
        up to the logit, so positive cells are ink that voted for the class, negative ones ink
        that voted against it.
        """
        return np.asarray(self.coef[predicted] * self._features(inks))

    def distances(self, inks: NDArray[np.float64]) -> NDArray[np.float64]:
        """(n,) Mahalanobis distance of each image from the training images' mean."""
        centred = self._features(inks) - self.mean
        squared = np.einsum("ij,jk,ik->i", centred, self.precision, centred)
        return np.asarray(np.sqrt(np.maximum(squared, 0.0)), dtype=np.float64)

    @staticmethod
    def _features(inks: NDArray[np.float64]) -> NDArray[np.float64]:
        return inks / INK_SCALE


def answers(
    classifier: Classifier, inks: NDArray[np.float64], detect_drift: bool, explain: bool
) -> list[tuple[Any, Any, Any]]:
    """(result, explanation, drift) for each row of `inks`, computed for the whole batch at once."""
    probabilities = classifier.probabilities(inks)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :TOP_CLASSES]
    predicted = order[:, 0]
    attributions = classifier.attributions(inks, predicted) if explain else None
    distances = classifier.distances(inks) if detect_drift else None
    rows = []
    for row in range(len(inks)):
        result = {
            "classPredictions": [
                {"class": str(classifier.classes[k]), "score": round(float(probabilities[row, k]), DECIMALS)}
                for k in order[row]
            ]
        }
        explanation = None
        if attributions is not None:
            explanation = {
                "method": "coefficient x input",
                "class": str(classifier.classes[predicted[row]]),
                "shape": [SIDE, SIDE],
                "attribution": np.round(attributions[row].reshape(SIDE, SIDE), DECIMALS).tolist(),
                "intercept": round(float(classifier.intercept[predicted[row]]), DECIMALS),
            }
        drift = None
        if distances is not None:
            distance = float(distances[row])
            drift = {
                "method": "mahalanobis",
                "distance": round(distance, DECIMALS),
                "threshold": round(classifier.drift_threshold, DECIMALS),
                "outOfDistribution": distance > classifier.drift_threshold,
            }
        rows.append((result, explanation, drift))
    return rows
