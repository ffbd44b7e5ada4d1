"""The digits example: its test cases, its training, its answers, and how it refuses bad images.

Needs the optional groups examples and examples-train (`scripts/dev.sh test` installs them).
"""

import io
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import bad_images
import numpy as np
import pytest
from digits_model import images
from digits_model.classifier import Classifier
from digits_model.model import INPUT_FILENAME, DigitsModel
from numpy.typing import NDArray
from PIL import Image

from grpc_model.src.cli.author.testing import run_cases_in_process
from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.tests.conftest import ServerThread, loopback_settings

HERE = Path(__file__).resolve().parent.parent
BUNDLES = HERE / "asset_bundle"
MODEL_CLASS = "digits_model.model"
CASE_NAME = re.compile(r"^\d{4}-heldout-(\d+)-label-(\d)-(.+)$")


@pytest.fixture(scope="module")
def model() -> DigitsModel:
    return DigitsModel()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    running = ServerThread(loopback_settings(model_class=MODEL_CLASS, asset_bundle_dir=BUNDLES))
    assert running.client.status().status_code == 200  # loads the model
    yield running
    running.stop()


def results(output: Mapping[str, bytes]) -> dict[str, object]:
    data = json.loads(output["results.json"])["data"]
    assert isinstance(data, dict)
    return data


def test_the_test_cases_pass_through_the_wrapper_one_by_one_and_in_batches() -> None:
    bundle = load_bundle(BUNDLES)
    cases = load_test_cases(bundle)
    assert len(cases) >= 10
    outcomes = run_cases_in_process(bundle, cases, MODEL_CLASS)
    assert [(o.name, o.problems) for o in outcomes if not o.passed] == []
    assert any("handle_input_batch" in o.name for o in outcomes)  # the batch method was exercised too


def test_the_test_cases_are_held_out_images_never_training_ones() -> None:
    import train  # scikit-learn: imported by the two tests that train, not by every test process

    data = train.split()
    held_out, trained_on = set(data.held_out.tolist()), set(data.train.tolist())
    cases = load_test_cases(load_bundle(BUNDLES))
    for case in cases:
        match = CASE_NAME.match(case.name)
        assert match, f"{case.name}: expected NNNN-heldout-INDEX-label-DIGIT-VARIANT"
        index, label, variant = int(match[1]), int(match[2]), match[3]
        assert index in held_out, case.name
        assert index not in trained_on, case.name
        assert data.labels[index] == label, case.name
        if "wide" not in variant:  # every other variant is the dataset image itself, re-encoded
            grid = images.ink_grid(INPUT_FILENAME, case.inputs[INPUT_FILENAME])
            assert np.abs(grid - data.images[index]).max() < 0.1, case.name


def test_training_again_reproduces_the_committed_weights() -> None:
    import train

    assert train.differences(Classifier.load(), train.fit(train.split())) == []


def test_the_batch_method_scores_the_whole_batch_in_one_array_call(
    model: DigitsModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [{INPUT_FILENAME: case.inputs[INPUT_FILENAME]} for case in load_test_cases(load_bundle(BUNDLES))]
    one_by_one = [model.handle_single_input(item, True, True) for item in items]
    calls: list[int] = []
    probabilities = Classifier.probabilities

    def counted(self: Classifier, inks: NDArray[np.float64]) -> NDArray[np.float64]:
        calls.append(len(inks))
        return probabilities(self, inks)

    monkeypatch.setattr(Classifier, "probabilities", counted)
    batched = model.handle_input_batch(items, True, True)
    assert calls == [len(items)]
    assert [results(o) for o in batched] == [results(o) for o in one_by_one]


def test_the_explanation_is_each_pixels_share_of_the_predicted_class_score(model: DigitsModel) -> None:
    case = load_test_cases(load_bundle(BUNDLES))[1]
    answer = results(model.handle_single_input(case.inputs, False, True))
    explanation = answer["explanation"]
    assert isinstance(explanation, dict)
    top = answer["result"]["classPredictions"][0]["class"]  # type: ignore[index]
    assert explanation["class"] == top
    assert explanation["shape"] == [8, 8]
    attribution = np.array(explanation["attribution"])
    assert attribution.shape == (8, 8)
    classifier = model.classifier
    k = list(classifier.classes).index(top)
    features = images.ink_grid(INPUT_FILENAME, case.inputs[INPUT_FILENAME]) / images.INK_SCALE
    logit = float(classifier.coef[k] @ features + classifier.intercept[k])
    assert attribution.sum() + explanation["intercept"] == pytest.approx(logit, abs=1e-4)
    assert answer["drift"] is None  # not asked for


def test_drift_flags_images_unlike_the_training_digits(model: DigitsModel) -> None:
    digit = load_test_cases(load_bundle(BUNDLES))[0].inputs
    noise = np.random.default_rng(0).integers(0, 256, size=(32, 32), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(noise).save(png, "PNG")
    stranger = {INPUT_FILENAME: png.getvalue()}
    near, far = (results(model.handle_single_input(item, True, False))["drift"] for item in (digit, stranger))
    assert isinstance(near, dict)
    assert isinstance(far, dict)
    assert near["outOfDistribution"] is False
    assert far["outOfDistribution"] is True
    assert far["distance"] > near["threshold"] > near["distance"]


BAD_IMAGES = [
    (bad_images.not_an_image, "image.png: not a PNG or JPEG image"),
    (bad_images.truncated_png, "image.png: the image data is damaged and cannot be decoded"),
    (bad_images.empty_png, "image.png: the image is 0x0 pixels; it needs at least 1x1"),
    (bad_images.bomb_png, "image.png: the image is 20000x20000 pixels (400,000,000); this model reads at most"),
]


@pytest.mark.parametrize(("make", "message"), BAD_IMAGES, ids=[make.__name__ for make, _ in BAD_IMAGES])
def test_the_wrapper_says_what_is_wrong_with_a_bad_image(model: DigitsModel, make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(images.ImageError) as raised:
        model.handle_input_batch([{INPUT_FILENAME: bad_images.good_png()}, {INPUT_FILENAME: make()}], False, False)
    assert str(raised.value).startswith(message)


def test_bad_images_fail_alone_in_a_call_to_the_server(server: ServerThread) -> None:
    good = bad_images.good_png()
    bad = [make() for make, _ in BAD_IMAGES]
    response = server.client.run([{INPUT_FILENAME: content} for content in [good, *bad, good]])
    assert [item.success for item in response.outputs] == [True, False, False, False, False, True]
    errors = [item.output["error"].decode() for item in response.outputs[1:5]]
    assert "image.png: content is not image/png or image/jpeg" in errors[0]  # the server's check, before the model
    for error, (_, message) in zip(errors[1:], BAD_IMAGES[1:], strict=True):
        assert f"ImageError: {message}" in error
    assert results(response.outputs[0].output) == results(response.outputs[5].output)
