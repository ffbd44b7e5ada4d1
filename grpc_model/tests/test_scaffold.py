"""`grpc-model init`: the names and media types it takes, and files that stay valid whatever they hold."""

import ast
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from grpc_model.src.cli import app
from grpc_model.src.cli.author import templates
from grpc_model.src.cli.author.file_spec import FileSpec, ScaffoldError
from grpc_model.src.cli.author.scaffold import init_model
from grpc_model.src.metadata.schema import ModelSpec
from grpc_model.tests.conftest import copy_project
from grpc_model.tests.test_cli import files, grpc_model_cli

REFUSED = [
    ("--output", "results.json=application/json\nx: 1", "the media type"),  # injected a key into model.yaml
    ("--output", "a\nb.json=application/json", "the file name"),  # broke the generated wrapper
    ("--input", "../in.txt=text/plain", "the file name"),
    ("--input", "..=text/plain", "the file name"),
    ("--input", "dir\\in.txt=text/plain", "the file name"),
    ("--input", " in.txt=text/plain", "the file name"),
    ("--input", "in\u2028.txt=text/plain", "the file name"),
    ("--input", "x" * 256 + "=text/plain", "the file name"),
    ("--output", "out=text", "the media type"),
    ("--output", "out=image/*", "the media type"),  # a family: inputs may accept one, an output has one type
    ("--output", "out=text/plain; charset", "the media type"),
    ("--input", "in.txt=text/plain, text/csv", "the media type"),
]


def test_init_refuses_what_is_not_a_file_name_or_a_media_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process (the CLI's own runner): a process per refusal would test nothing more, 12 times slower."""
    project = copy_project(tmp_path / "project")
    monkeypatch.chdir(project)  # init acts on the project in the working directory
    before = files(project)
    for option, value, what in REFUSED:
        refused = CliRunner().invoke(app, ["init", "Word Stats", "--force", option, value], env={"COLUMNS": "200"})
        assert refused.exit_code == 2, (option, value, refused.output)
        assert "".join(f"{option} {value!r}: {what}".split()) in "".join(refused.stderr.split()), refused.output
        assert files(project) == before  # nothing written


def test_init_takes_families_and_parameters_where_allowed(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    made = grpc_model_cli(
        project, "init", "Word Stats", "--force", "--input", "photo=image/*", "--input",
        "notes.txt=text/plain; charset=\"utf-8\"", "--input", "x²=application/json",
        "--output", "données²=application/vnd.example+json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert grpc_model_cli(project, "validate").returncode == 0
    ast.parse((project / "model_lib/src/model.py").read_text())


HOSTILE = 'Evil """\n\x00\x7f\x85\u2028\\ name\'s'


def test_generated_files_hold_any_text_as_data() -> None:
    """The templates quote every value themselves, so even text that init refuses cannot change the code or YAML."""
    inputs = [FileSpec("in\n x.txt", "text/plain\nmaxSize: 9G")]
    outputs = [FileSpec('o"\n#.json', "application/json\n  injected: 1"), FileSpec("b\x00in", "image/png # x")]

    code = templates.wrapper(HOSTILE, "EvilModel", "0.1.0", inputs, outputs)
    tests = templates.unit_tests("EvilModel", inputs, outputs)
    spec = yaml.safe_load(templates.model_yaml(HOSTILE, HOSTILE, "0.1.0", inputs, outputs))

    ast.parse(code)
    ast.parse(tests)
    assert (spec["name"], spec["author"]) == (HOSTILE, HOSTILE)
    assert spec["inputs"] == {"in\n x.txt": {"acceptedMediaTypes": ["text/plain\nmaxSize: 9G"], "maxSize": "1M",
                                            "description": ""}}  # fmt: skip
    assert [spec["outputs"][f.name]["mediaType"] for f in outputs] == [f.media_type for f in outputs]
    assert yaml.safe_load(templates.docker_metadata("x\ny: 1")) == {
        "dockerMetadata": [{"registry": "registry.example.com", "repo_prefix": "models/", "repo_suffix": ""}],
        "id": "x\ny: 1",
    }


def test_the_schema_refuses_what_init_refuses() -> None:
    """One rule for both: a name or media type that init refuses is refused in model.yaml too."""
    for _, value, what in REFUSED:
        with pytest.raises(ScaffoldError):
            FileSpec.parse(value, "--output")
        name, _, media_type = value.partition("=")
        field = "file name" if what == "the file name" else "media type"
        spec = yaml.safe_load(templates.model_yaml("M", "A", "0.1.0", [FileSpec("in", "text/plain")],
                                                   [FileSpec(name, "text/plain") if field == "file name"
                                                    else FileSpec("out", media_type.strip())]))  # fmt: skip
        with pytest.raises(ValidationError, match=r"\[key\]" if field == "file name" else "mediaType"):
            ModelSpec(**spec)


def test_init_refuses_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 in argv arrive as lone surrogates, which no file can hold."""
    with pytest.raises(ScaffoldError, match="NAME '\\\\udcff' is not valid Unicode"):
        init_model(tmp_path, tmp_path / "asset_bundle", "\udcff", "0.1.0", [FileSpec("a", "text/plain")], [])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x" * 5000, "NAME has 5,000 characters; at most 100"),
        ("Loan\nRisk", r"NAME 'Loan\\nRisk' holds the invisible character U\+000A at position 5"),
        ("Loan\u202eRisk", r"NAME 'Loan\\u202eRisk' holds the invisible character U\+202E at position 5"),
    ],
)
def test_init_refuses_a_name_that_no_listing_can_show_as_it_is(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(ScaffoldError, match=message):
        init_model(tmp_path, tmp_path / "asset_bundle", name, "0.1.0", [FileSpec("a", "text/plain")], [])
    assert list(tmp_path.iterdir()) == []
