"""The digits example's wrapper: `image.png` (PNG or JPEG) in, `results.json` with the top 3 digits out.

Served with `examples/digits/run.sh serve` (model class `digits_model.model`, bundle
`examples/digits/asset_bundle/`). See examples/digits/README.md for the answer's format.
"""

import numpy as np

from grpc_model.wrapper import ModelInput, ModelOutput, ModelWrapper, success_output

from .classifier import Classifier, answers
from .images import ink_grid

INPUT_FILENAME = "image.png"


class DigitsModel(ModelWrapper):
    """A handwritten-digit classifier (0-9) trained on scikit-learn's digits."""

    thread_safe = True  # read-only arrays; numpy and Pillow release the GIL in their loops

    def __init__(self) -> None:
        self.classifier = Classifier.load()  # once per server (per worker): a 40 kB file

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        return self.handle_input_batch([model_input], detect_drift, explain)[0]

    def handle_input_batch(
        self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    ) -> list[ModelOutput]:
        """Decodes each image (raising for a bad one: the server then retries the items one by one, so
        only that item fails), then scores the whole batch in one matrix product."""
        inks = np.stack([ink_grid(INPUT_FILENAME, _image(item)) for item in model_inputs])
        return [success_output(*answer) for answer in answers(self.classifier, inks, detect_drift, explain)]


def _image(model_input: ModelInput) -> bytes:
    if INPUT_FILENAME not in model_input:
        raise ValueError(f"missing input file {INPUT_FILENAME!r}; got {sorted(model_input) or 'no files'}")
    return model_input[INPUT_FILENAME]
