"""Your model, wrapped for the server.

This is the file you edit. Steps:

1. Import your own model code (put it in `model_lib/src/`, with its tests in `model_lib/tests/`).
2. In `__init__`, do the one-time work: load weights, build the network, warm caches.
3. In `handle_single_input`, turn one item's input files (bytes) into output files (bytes).
4. Optionally, implement `handle_input_batch` to run many items in one pass.
5. Rename `ExampleModel` as you like: the server serves the one model class of this module.

The input file names are the keys under `inputs:` in `asset_bundle/<version>/model.yaml`,
the output file names the keys under `outputs:`. The functional test cases in
`asset_bundle/<version>/test_cases/` hold an input set and the expected outputs for each
case; `grpc-model test` checks your wrapper against all of them.
"""

from model_lib.src.model_wrapper import ModelInput, ModelOutput, ModelWrapper, results_json

INPUT_FILENAME = "input.txt"


class ExampleModel(ModelWrapper):
    """Greets the person named by the last word of `input.txt`."""

    def __init__(self) -> None:
        # Load your model here, once. For example:
        #     self.model = torch.jit.load(Path(__file__).parent / "weights.pt")
        # Anything raised here is reported by the Status call (500, with your message).
        self.greeting = "Hello. Nice to meet you, {}"

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        # 1. Read the input files you declared in model.yaml. Raise with a clear message
        #    when an input is unusable: the caller sees it as this item's error.
        text = _read_text(model_input, INPUT_FILENAME)

        # 2. Run your model.
        result = {"greeting": self.greeting.format(_last_word(text))}

        # 3. Return the output files declared in model.yaml, by name. `results_json` writes the
        #    standard document, {"data": {"result": ..., "explanation": ..., "drift": ...}}; pass
        #    `explanation=` / `drift=` when the caller asked for them (explain / detect_drift)
        #    and your model supports them: clients read them at data.explanation and data.drift.
        return {"results.json": results_json(result)}

    def handle_input_batch(
        self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    ) -> list[ModelOutput]:
        # A real model would run all items in one pass here (one GPU call, one
        # vectorised numpy call). Return one output per input, in order.
        return [self.handle_single_input(item, detect_drift, explain) for item in model_inputs]


def _read_text(model_input: ModelInput, filename: str) -> str:
    if filename not in model_input:
        raise ValueError(f"missing input file {filename!r}; got {sorted(model_input) or 'no files'}")
    try:
        return model_input[filename].decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{filename} is not valid UTF-8 text ({error.reason} at byte {error.start})") from None


def _last_word(text: str) -> str:
    words = text.split()
    if not words:
        raise ValueError(f"{INPUT_FILENAME} is empty: expected at least one word")
    return words[-1].strip('"')
