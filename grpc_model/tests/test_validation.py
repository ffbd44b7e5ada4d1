"""Input validation against model.yaml: sizes, durations, media types, declared files."""

import json
import logging
import threading
from pathlib import Path
from typing import Any

import ijson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from grpc_model.src import validation
from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.metadata import ModelSpec
from grpc_model.src.metadata.bundle import describe_errors
from grpc_model.src.metadata.units import parse_duration, parse_size
from grpc_model.src.validation import CHUNK_BYTES, SNIFFERS, InputValidator, sniffer
from grpc_model.tests.conftest import TEST_VERSION, ServerFactory, ServerThread, write_test_bundle


@pytest.mark.parametrize(
    ("text", "size"),
    [("100", 100), ("100B", 100), ("512K", 512 * 1024), ("5M", 5 * 1024**2), ("1G", 1024**3), ("1.5MB", 1572864),
     ("2 KiB", 2048), ("1kb", 1024), (" 3m ", 3 * 1024**2)],
)  # fmt: skip
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "five", "5 X", "-1", "1.2.3M", "M"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size; write bytes or a number with K, M, G or T"):
        parse_size(text)


@pytest.mark.parametrize(("text", "seconds"), [("20s", 20), ("1500ms", 1.5), ("2m", 120), ("1h", 3600), ("3", 3)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "20 sec", "-1s", "0s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|longer than zero"):
        parse_duration(text)


def spec(**inputs: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "specification": "0.4",
            "version": "1.0.0",
            "name": "n",
            "author": "a",
            "inputs": inputs,
            "outputs": {"results.json": {"mediaType": "application/json", "maxSize": "1M"}},
        }
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("maxSize", "5 lots", "inputs.in.maxSize: Value error, '5 lots' is not a size"),
        ("timeout", {"run": "a while"}, "timeout.run: Value error, 'a while' is not a duration"),
    ],
)
def test_bad_sizes_and_durations_in_model_yaml_name_the_key(key: str, value: object, expected: str) -> None:
    data: dict[str, Any] = {
        "specification": "0.4", "version": "1.0.0", "name": "n", "author": "a",
        "inputs": {"in": {"acceptedMediaTypes": ["text/plain"], "maxSize": "1K"}},
        "outputs": {"o": {"mediaType": "text/plain", "maxSize": "1K"}},
    }  # fmt: skip
    if key == "maxSize":
        data["inputs"]["in"]["maxSize"] = value
    else:
        data[key] = value
    with pytest.raises(ValidationError) as raised:
        ModelSpec.model_validate(data)
    assert expected in describe_errors(raised.value, ModelSpec)  # the message users see at start-up


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
SAMPLES = {
    "text/plain": (b"hello \xc3\xa9", b"\xff\xfe"),
    "application/json": (b'{"a": [1, 2]}', b"{not json"),
    "image/png": (PNG, b"PNG"),
    "image/jpeg": (b"\xff\xd8\xff\xe0rest", b"\xff\xd8"),
    "image/gif": (b"GIF89a....", b"GIF90a"),
    "image/tiff": (b"II*\x00....", b"II+\x00"),
    "image/bmp": (b"BM....", b"MB"),
    "application/pdf": (b"%PDF-1.7", b"PDF"),
    "audio/wav": (b"RIFF\x00\x00\x00\x00WAVEfmt ", b"RIFF\x00\x00\x00\x00AVI "),
    "application/zip": (b"PK\x03\x04....", b"PK\x01\x02"),
}


def matches(media_type: str, content: bytes) -> bool | None:
    check = sniffer(media_type)
    return None if check is None else check(content)


@pytest.mark.parametrize("media_type", sorted(SAMPLES))
def test_sniffers_accept_their_type_and_reject_others(media_type: str) -> None:
    good, bad = SAMPLES[media_type]
    assert matches(media_type, good) is True
    assert matches(media_type, bad) is False


def test_media_type_forms() -> None:
    assert matches("Text/Plain; charset=utf-8", b"hi") is True
    assert matches("audio/x-wav", b"RIFF\x00\x00\x00\x00WAVE") is True
    assert matches("application/octet-stream", b"\x00\xff") is True
    assert matches("model/x-custom", b"anything") is None
    assert matches("image/*", PNG) is None  # a family has members no sniffer knows: not checked


WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 "
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x00"
FLAC = b"fLaC\x00\x00\x00\x22"


@pytest.mark.parametrize(
    ("media_type", "content"),
    [
        ("image/*", WEBP), ("image/*", SVG), ("audio/*", MP3), ("audio/*", FLAC), ("image/*", PNG),
        ("text/plain; charset=iso-8859-1", "café".encode("latin-1")),
        ("text/plain; charset=ISO-8859-1", b"\xff\xfe"),  # every byte is a Latin-1 character
        ('text/plain; charset="utf-16"', "café".encode("utf-16")),
        ("application/json", "[\"café\"]".encode("utf-16")),  # JSON in UTF-16, as json.loads reads it
        ("application/json", b"\xef\xbb\xbf[1]"),  # UTF-8 with a byte order mark
    ],
)  # fmt: skip
def test_members_of_families_and_declared_charsets_are_accepted(media_type: str, content: bytes) -> None:
    validator = InputValidator(spec(file={"acceptedMediaTypes": [media_type], "maxSize": "1K"}))
    assert validator.check({"file": content}) == ({"file": content}, None)


@pytest.mark.parametrize(
    ("media_type", "content"),
    [
        ("text/plain; charset=us-ascii", "café".encode()),
        ("text/plain; charset=utf-8", "café".encode("latin-1")),
        ("text/plain", "café".encode("latin-1")),  # no charset: UTF-8
        ("text/plain; charset=idna", b"xn--zz."),  # a codec that raises UnicodeError, not UnicodeDecodeError
    ],
)
def test_a_declared_charset_is_checked(media_type: str, content: bytes) -> None:
    validator = InputValidator(spec(file={"acceptedMediaTypes": [media_type], "maxSize": "1K"}))
    assert validator.check({"file": content}) == ({}, f"file: content is not {media_type}")


@pytest.mark.parametrize(
    ("media_type", "level", "says"),
    [
        # What the author can act on is a warning: a charset that is no text encoding, a media type nobody knows.
        ("text/plain; charset=x-nope", logging.WARNING, "charset 'x-nope' is not a text encoding"),
        ("text/plain; charset=rot13", logging.WARNING, "charset 'rot13' is not a text encoding"),
        ("text/plain; charset=base64", logging.WARNING, "charset 'base64' is not a text encoding"),
        ("text/csv; charset=undefined", logging.WARNING, "charset 'undefined' is not a text encoding"),
        ("text/plian", logging.WARNING, "not a media type Python knows; did you mean text/plain?"),
        # A family, or a known type without a check, is what it is: said once at INFO, not warned about.
        ("image/*", logging.INFO, "a family of media types"),
        ("application/msword", logging.INFO, "no content check for this media type"),
    ],
)
def test_a_type_that_is_not_checked_says_so_and_warns_only_when_the_author_can_act(
    media_type: str, level: int, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="grpc_model.src.validation"):
        validator = InputValidator(spec(file={"acceptedMediaTypes": [media_type], "maxSize": "1K"}))
    [record] = caplog.records
    assert record.levelno == level
    assert f"input file: {media_type}: {says}" in record.getMessage()
    assert "the content of input file is not checked" in record.getMessage()
    assert validator.check({"file": b"\xff"}) == ({"file": b"\xff"}, None)


def csv_validator(media_type: str = "text/csv") -> InputValidator:
    return InputValidator(spec(table={"acceptedMediaTypes": [media_type], "maxSize": "1M"}))


def test_csv_is_checked_without_a_word_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="grpc_model.src.validation"):
        csv_validator()
    assert caplog.records == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"a,b\n1,2\n1,2,3\n", "line 3 has 3 fields, line 1 has 2 (delimiter ',')"),
        (b"a;b\n1;2\n1;2;3\n", "line 3 has 3 fields, line 1 has 2 (delimiter ';')"),
        (b'a,b\n1,"2\n', "line 2: unexpected end of data"),  # an unterminated quote would swallow the rest
        (b'a,b\n1,"2"x\n', "line 2: ',' expected after '\"'"),
        (b"a,b\n\xff,2\n", "not utf-8 text (invalid start byte)"),
    ],
)
def test_csv_content_is_checked(content: bytes, problem: str) -> None:
    assert csv_validator().check({"table": content}) == ({}, f"table: content is not text/csv: {problem}")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"a,b\r\n1,2\r\n",
        b"a\tb\n1\t2\n",
        b"a;b\n1,5;2\n2,5;3,5\n",  # semicolons, decimal commas: ragged with commas, even with semicolons
        b'name,text\n1,"two\nlines, and a ""quote"""\n',
        b"one column\nsecond row\n",
        b"a,b\n\n1,2\n",  # a blank line is no record
        "é,ü\n".encode(),
        b"x" * (CHUNK_BYTES - 3) + b",y\r\n1,2\r\n",  # \r ends one decoded chunk, \n starts the next
    ],
)
def test_well_formed_csv_is_accepted(content: bytes) -> None:
    assert csv_validator().check({"table": content}) == ({"table": content}, None)


def test_csv_in_a_declared_charset() -> None:
    content = "café,1\n".encode("latin-1")
    assert csv_validator("text/csv; charset=iso-8859-1").check({"table": content}) == ({"table": content}, None)


def test_a_sniffer_that_raises_fails_only_its_item(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(content: bytes) -> bool:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setitem(SNIFFERS, "application/json", broken)
    validator = InputValidator(spec(doc={"acceptedMediaTypes": ["application/json"], "maxSize": "1K"}))
    assert validator.check({"doc": b"[]"}) == (
        {},
        "doc: content could not be checked as application/json: RecursionError: maximum recursion depth exceeded",
    )


@pytest.fixture(scope="module")
def json_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test bundle, its input `a` accepting application/json of up to 5M."""
    root = write_test_bundle(tmp_path_factory.mktemp("json_bundle"))
    model_yaml = root / TEST_VERSION / "model.yaml"
    spec = yaml.safe_load(model_yaml.read_text())
    spec["inputs"]["a"] = {"acceptedMediaTypes": ["application/json"], "maxSize": "5M"}
    model_yaml.write_text(yaml.safe_dump(spec))
    return root


def test_deeply_nested_json_does_not_fail_the_call(serve_wrapper: ServerFactory, json_bundle: Path) -> None:
    server = serve_wrapper("Echo", asset_bundle_dir=json_bundle)
    server.client.status()
    deep = b"[" * 100_000 + b"]" * 100_000  # valid JSON, deeper than Python's recursion limit

    response = server.client.run([{"a": deep}, {"a": b"[1]"}, {"a": b"[" * 100_000}])

    assert [output.success for output in response.outputs] == [True, True, False]
    assert response.outputs[2].output["error"] == b"a: content is not application/json"


def test_a_large_item_is_checked_off_the_event_loop(
    serve_wrapper: ServerFactory, json_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a large item is being checked, the server answers other calls."""
    checking, may_finish = threading.Event(), threading.Event()

    large = b"[" + b"0," * 500_000 + b"0]"

    def held_json_check(content: bytes) -> bool:
        if content != large:
            return True
        checking.set()
        return may_finish.wait(timeout=60)  # the window this test holds open

    monkeypatch.setitem(SNIFFERS, "application/json", held_json_check)
    server = serve_wrapper("Echo", asset_bundle_dir=json_bundle)
    server.client.status()
    call = server.client.stub.Run.future(pb.RunRequest(inputs=[pb.InputItem(input={"a": large})]), timeout=60)
    try:
        assert checking.wait(timeout=30)
        assert server.client.health() == "SERVING"  # on the event loop while the check holds
        assert not call.done()
    finally:
        may_finish.set()
    assert call.result().outputs[0].success


def test_a_large_json_item_is_parsed_in_small_chunks_that_let_other_threads_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The C parser holds the GIL while it parses a chunk: each chunk is small, and the GIL is handed over
    after each one, so that the event loop never waits behind the check of a large item (issue 19, 14)."""
    steps: list[int | str] = []
    make_parser = ijson.basic_parse_coro

    class RecordingParser:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.parser = make_parser(*args, **kwargs)

        def send(self, chunk: bytes) -> None:
            steps.append(len(chunk))
            self.parser.send(chunk)

        def close(self) -> None:
            self.parser.close()

    monkeypatch.setattr(ijson, "basic_parse_coro", RecordingParser)
    monkeypatch.setattr(validation, "_let_others_run", lambda: steps.append("yield"), raising=False)
    item = json.dumps([{"id": n, "values": [1.5, None, True, "text"]} for n in range(20_000)]).encode()

    check = sniffer("application/json")
    assert check is not None
    assert check(item) is True
    assert sum(step for step in steps if isinstance(step, int)) == len(item)
    assert max(step for step in steps if isinstance(step, int)) <= 8 * 1024
    assert steps[1::2] == ["yield"] * (len(steps) // 2)  # a hand-over after every chunk
    assert len(steps) % 2 == 0


def test_an_unknown_media_type_passes_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        validator = InputValidator(spec(scan={"acceptedMediaTypes": ["model/x-custom"], "maxSize": "1K"}))
    assert "model/x-custom" in caplog.text
    assert validator.check({"scan": b"\x00\x01"}) == ({"scan": b"\x00\x01"}, None)


TEXT_AND_IMAGE = spec(
    **{
        "text.txt": {"acceptedMediaTypes": ["text/plain"], "maxSize": "10"},
        "image": {"acceptedMediaTypes": ["image/png", "image/jpeg"], "maxSize": "1K"},
    }
)


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ({"text.txt": b"hi", "image": PNG}, None),
        ({"text.txt": b"hi", "image": b"\xff\xd8\xff\xe0"}, None),
        ({"image": PNG}, "text.txt: missing; this model needs text.txt, image"),
        ({"text.txt": b"hi", "image": PNG, "extra": b""},
         "extra: not an input of this model (its inputs: text.txt, image)"),
        ({"text.txt": b"x" * 11, "image": PNG}, "text.txt: 11 bytes is larger than its maxSize 10 (10 bytes)"),
        ({"text.txt": b"\xff", "image": PNG}, "text.txt: content is not text/plain"),
        ({"text.txt": b"hi", "image": b"GIF89a"}, "image: content is not image/png or image/jpeg"),
        ({}, "text.txt, image: missing; this model needs text.txt, image"),
    ],
)  # fmt: skip
def test_items_are_checked_against_the_declared_inputs(item: dict[str, bytes], error: str | None) -> None:
    checked, problem = InputValidator(TEXT_AND_IMAGE).check(item)
    assert problem == error
    assert checked == (item if error is None else {})


def test_undeclared_files_can_be_ignored() -> None:
    item = {"text.txt": b"hi", "image": PNG, "extra": b"?"}
    assert InputValidator(TEXT_AND_IMAGE, reject_undeclared=False).check(item) == (
        {"text.txt": b"hi", "image": PNG},
        None,
    )


def test_invalid_items_fail_alone_over_grpc(greeter_server: ServerThread) -> None:
    greeter_server.client.status()
    response = greeter_server.client.run(
        [{"input.txt": b"Hi Al"}, {"input.txt": b"x" * (1024 * 1024 + 1)}, {"input.txt": b"Hi Bo", "x": b""}]
    )
    assert [item.success for item in response.outputs] == [True, False, False]
    assert b"larger than its maxSize 1M" in response.outputs[1].output["error"]
    assert response.outputs[2].output["error"] == b"x: not an input of this model (its inputs: input.txt)"


def test_ignored_undeclared_files_do_not_reach_the_model(serve_greeter: ServerFactory) -> None:
    server = serve_greeter(undeclared_inputs="ignore")
    server.client.status()
    response = server.client.run([{"input.txt": b"Hi Al", "x": b"\xff"}])
    assert response.outputs[0].success


def expected_success(item: dict[str, bytes]) -> bool:
    if set(item) != {"input.txt"} or len(item["input.txt"]) > 1024 * 1024:
        return False
    try:
        return bool(item["input.txt"].decode("utf-8").split())
    except UnicodeDecodeError:
        return False


items_strategy = st.dictionaries(
    st.sampled_from(["input.txt", "input.txt", "input.txt", "image.png", "x"]),
    st.one_of(st.binary(max_size=64), st.text(max_size=32).map(str.encode)),
    max_size=2,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(items=st.lists(items_strategy, max_size=20), detect_drift=st.booleans(), explain=st.booleans())
def test_random_requests_get_one_answer_per_item(
    greeter_server: ServerThread, items: list[dict[str, bytes]], detect_drift: bool, explain: bool
) -> None:
    client = greeter_server.client
    client.status()

    response = client.run(items, detect_drift, explain)

    assert len(response.outputs) == len(items)
    for item, output in zip(items, response.outputs, strict=True):
        assert output.success == expected_success(item), (item, output)
        if output.success:
            name = item["input.txt"].decode().split()[-1].strip('"')
            assert json.loads(output.output["results.json"])["data"]["result"]["greeting"].endswith(name)
        else:
            assert set(output.output) == {"error"}
            assert output.output["error"]
    assert client.health() == "SERVING"
