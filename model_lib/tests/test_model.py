"""The example model and the output helpers, without the server."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpc_model.wrapper import ModelWrapper, failure_output, results_json, success_output
from model_lib.src.model import ExampleModel


def greeting(output: dict[str, bytes]) -> str:
    return str(json.loads(output["results.json"])["data"]["result"]["greeting"])


def test_results_json_is_the_standard_envelope() -> None:
    assert json.loads(results_json({"x": 1})) == {"data": {"result": {"x": 1}, "explanation": None, "drift": None}}
    assert json.loads(results_json("r", explanation={"why": "a"}, drift=0.5))["data"] == {
        "result": "r",
        "explanation": {"why": "a"},
        "drift": 0.5,
    }


def test_results_json_keeps_unicode_readable() -> None:
    assert "Zoë".encode() in results_json("Zoë")


def test_success_and_failure_outputs() -> None:
    assert list(success_output({"a": 1})) == ["results.json"]
    assert failure_output("bad input") == {"error": b"bad input"}


def test_the_base_class_methods_are_stubs() -> None:
    with pytest.raises(NotImplementedError, match="must implement handle_single_input"):
        ModelWrapper().handle_single_input({}, False, False)
    with pytest.raises(NotImplementedError):
        ModelWrapper().handle_input_batch([], False, False)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Hello, my name is Douglas", "Douglas"),
        ('I am "Ada"', "Ada"),
        ("Grace", "Grace"),
        ("\tI am\n Linus \n", "Linus"),
    ],
)
def test_greets_the_last_word(text: str, name: str) -> None:
    assert greeting(ExampleModel().handle_single_input({"input.txt": text.encode()}, False, False)) == (
        f"Hello. Nice to meet you, {name}"
    )


# Timing is not what this test is about: on a loaded machine one example can take longer than
# hypothesis's default deadline (200 ms) or its data generation look "too slow".
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(min_size=1).filter(lambda w: w.split() == [w]), min_size=1))
def test_any_words_greet_the_last_one_unquoted(words: list[str]) -> None:
    output = ExampleModel().handle_single_input({"input.txt": " ".join(words).encode()}, True, True)
    name = words[-1].strip('"')
    assert greeting(output) == f"Hello. Nice to meet you, {name}"


@pytest.mark.parametrize(
    ("model_input", "message"),
    [
        ({}, "missing input file 'input.txt'"),
        ({"input.txt": b"\xff"}, "input.txt is not valid UTF-8 text"),
        ({"input.txt": b" \n "}, "input.txt is empty"),
    ],
)
def test_unusable_input_raises_a_clear_error(model_input: dict[str, bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExampleModel().handle_single_input(model_input, False, False)


def test_the_batch_method_answers_each_item_in_order() -> None:
    outputs = ExampleModel().handle_input_batch([{"input.txt": f"I am N{i}".encode()} for i in range(5)], False, False)
    assert [greeting(output) for output in outputs] == [f"Hello. Nice to meet you, N{i}" for i in range(5)]
