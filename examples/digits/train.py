"""Trains the digits example, reproducibly, and writes what it serves and what tests it.

    .venv/bin/python examples/digits/train.py            # weights.npz and the test cases
    .venv/bin/python examples/digits/train.py --check    # retrain in memory; exit 1 if weights.npz differs

Needs the optional `examples-train` group (scikit-learn): `scripts/dev.sh install --with
examples,examples-train`. The data is scikit-learn's bundled digits (1,797 8x8 images), so
nothing is downloaded. A seeded stratified split holds 1,000 images out: the model learns from
the other 797, and the test cases and the scoring run (evaluate.py) use held-out images only.
"""

import argparse
import io
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from numpy.typing import NDArray
from PIL import Image
from sklearn.covariance import LedoitWolf
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the example's own package, as its server imports it

from digits_model.classifier import WEIGHTS, Classifier  # noqa: E402
from digits_model.images import INK_SCALE, SIDE  # noqa: E402
from digits_model.model import INPUT_FILENAME, DigitsModel  # noqa: E402

SEED = 0
HELD_OUT = 1000
DRIFT_PERCENTILE = 99.0
CASES = HERE / "asset_bundle" / "0.1.0" / "test_cases"
CASE_TOLERANCE = {"absolute": 1.0e-4, "relative": 1.0e-4}


@dataclass(frozen=True)
class Split:
    """The digits with their dataset indices: the 797 the model learns from and the 1,000 held out."""

    images: NDArray[np.float64]  # (1797, 64), ink 0..16
    labels: NDArray[np.int64]
    train: NDArray[np.intp]
    held_out: NDArray[np.intp]


def split() -> Split:
    digits = load_digits()
    indices = np.arange(len(digits.target))
    train, held_out = train_test_split(indices, test_size=HELD_OUT, random_state=SEED, stratify=digits.target)
    return Split(digits.data.astype(np.float64), digits.target.astype(np.int64), train, held_out)


def fit(data: Split) -> dict[str, NDArray[np.generic]]:
    """The arrays of weights.npz (see digits_model/classifier.py), from the training images only."""
    features = data.images[data.train] / INK_SCALE
    model = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8, random_state=SEED)
    model.fit(features, data.labels[data.train])
    shrunk = LedoitWolf().fit(features)  # many border pixels never vary: a plain covariance is singular
    centred = features - shrunk.location_
    own = np.sqrt(np.einsum("ij,jk,ik->i", centred, shrunk.precision_, centred))
    return {
        "classes": np.array([str(c) for c in model.classes_]),
        "coef": model.coef_.astype(np.float64),
        "intercept": model.intercept_.astype(np.float64),
        "mean": shrunk.location_.astype(np.float64),
        "precision": shrunk.precision_.astype(np.float64),
        "drift_threshold": np.array(np.percentile(own, DRIFT_PERCENTILE)),
    }


def render(grid: NDArray[np.float64], scale: int) -> Image.Image:
    """A dataset image as a person would scan it: dark ink on white paper, each cell scale x scale pixels."""
    ink = np.clip(np.rint(grid.reshape(SIDE, SIDE) * (255.0 / INK_SCALE)), 0, 255).astype(np.uint8)
    return Image.fromarray(255 - np.kron(ink, np.ones((scale, scale), dtype=np.uint8)))


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def _transparent(image: Image.Image) -> bytes:
    """Black ink whose opacity is the ink, on transparent paper."""
    ink = 255 - np.asarray(image)
    rgba = np.zeros((*ink.shape, 4), dtype=np.uint8)
    rgba[..., 3] = ink
    return _png(Image.fromarray(rgba))


def _sixteen_bit(image: Image.Image) -> bytes:
    return _png(Image.fromarray(np.asarray(image).astype(np.uint16) * 257))


def _wide(image: Image.Image) -> bytes:
    canvas = Image.new("L", (image.width + 16, image.height), 255)
    canvas.paste(image, (8, 0))
    return _png(canvas)


# (case name, pixels per cell, encoder, explain, detect_drift): every accepted kind of file, flags included.
VARIANTS: list[tuple[str, int, Callable[[Image.Image], bytes], bool, bool]] = [
    ("png-gray-8x8", 1, lambda im: _png(im), False, False),
    ("png-gray-32x32", 4, lambda im: _png(im), False, False),
    ("png-rgb-64x64", 8, lambda im: _png(im.convert("RGB")), False, False),
    ("png-rgba-transparent-32x32", 4, _transparent, False, False),
    ("png-palette-24x24", 3, lambda im: _png(im.convert("P")), False, False),
    ("png-16bit-16x16", 2, _sixteen_bit, False, False),
    ("png-white-on-black-32x32", 4, lambda im: _png(Image.eval(im, lambda v: 255 - v)), False, False),
    ("png-wide-48x32", 4, _wide, False, False),
    ("jpeg-gray-64x64", 8, _jpeg, False, False),
    ("jpeg-rgb-40x40", 5, lambda im: _jpeg(im.convert("RGB")), False, False),
    ("png-explain", 4, lambda im: _png(im), True, False),
    ("png-drift", 4, lambda im: _png(im), False, True),
    ("png-explain-and-drift", 4, lambda im: _png(im), True, True),
]


def write_cases(data: Split) -> list[Path]:
    """One case per variant, each from its own held-out image; the expected answer is the model's own."""
    model = DigitsModel()
    shutil.rmtree(CASES, ignore_errors=True)
    written = []
    for number, ((name, scale, encode, explain, drift), index) in enumerate(
        zip(VARIANTS, data.held_out, strict=False), start=1
    ):
        image = encode(render(data.images[index], scale))
        case = CASES / f"{number:04d}-heldout-{index}-label-{data.labels[index]}-{name}"
        case.mkdir(parents=True)
        (case / INPUT_FILENAME).write_bytes(image)
        output = model.handle_single_input({INPUT_FILENAME: image}, drift, explain)
        results = json.loads(output["results.json"])
        (case / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        settings = {
            "explain": explain,
            "detect_drift": drift,
            "outputs": {"results.json": {"tolerance": CASE_TOLERANCE}},
        }
        (case / "case.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
        written.append(case)
    return written


def differences(committed: Classifier, fresh: dict[str, NDArray[np.generic]]) -> list[str]:
    """Arrays of a fresh training run that differ from the committed ones beyond float noise.

    L-BFGS stops where the gradient is below its tolerance, and where it stops depends on the CPU's order of
    floating-point sums (BLAS kernels differ between CPUs): the intercepts, the flattest direction, moved by 2.5e-5
    between two machines. 1e-4 is that noise with room; a real change to the data or the model moves them by far more.
    """
    found = []
    for name, array in fresh.items():
        mine = np.asarray(getattr(committed, name))
        same = np.array_equal(mine, array) if array.dtype.kind == "U" else np.allclose(mine, array, atol=1e-4)
        if not same:
            found.append(name)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="retrain in memory and compare with weights.npz")
    args = parser.parse_args()
    data = split()
    arrays = fit(data)
    if args.check:
        changed = differences(Classifier.load(), arrays)
        print(f"weights.npz differs from a fresh training run in: {changed}" if changed else "weights.npz reproduced")
        return 1 if changed else 0
    np.savez(WEIGHTS, **arrays)  # type: ignore[arg-type]
    print(f"wrote {WEIGHTS.relative_to(HERE.parent.parent)} ({WEIGHTS.stat().st_size} bytes)")
    predicted = Classifier.load().probabilities(data.images[data.held_out]).argmax(axis=1)
    accuracy = float(np.mean(predicted == data.labels[data.held_out]))
    print(f"held-out accuracy: {accuracy:.4f} on {len(data.held_out)} images")
    for case in write_cases(data):
        print(f"wrote {case.relative_to(HERE.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
