"""Finding a repository's models (repository/layout.py): one folder per model, named by its model.yaml."""

from pathlib import Path

import pytest

from grpc_model.src.repository.layout import RepositoryError, find_models
from grpc_model.tests.repository_models import write_bundle, write_wrapper_model
from grpc_model.tests.runtime_models import write_runtime_bundle


def test_each_folder_is_a_model_named_by_its_model_yaml_with_every_version(tmp_path: Path) -> None:
    write_wrapper_model(tmp_path, "first", "Hello World", ("0.1.0", "0.10.0", "0.2.0"))
    write_wrapper_model(tmp_path, "second", "Other Model")
    (tmp_path / ".git").mkdir()  # a checkout's own folders are no models
    (tmp_path / "README.md").write_text("the repository")

    models = find_models(tmp_path)

    assert [(m.name, m.path.name, m.versions, m.problem) for m in models] == [
        ("hello-world", "first", ("0.1.0", "0.2.0", "0.10.0"), ""),
        ("other-model", "second", ("0.1.0",), ""),
    ]
    assert models[0].has_wrapper


def test_a_runtime_model_needs_no_wrapper_package(tmp_path: Path) -> None:
    bundles = tmp_path / "iris" / "asset_bundle"
    write_bundle(bundles, "Iris", "0.1.0")
    (bundles / "0.1.0" / "model.joblib").write_bytes(b"not read until it loads")
    write_runtime_bundle(bundles, "sklearn", "model.joblib")

    (model,) = find_models(tmp_path)

    assert (model.name, model.problem, model.has_wrapper) == ("hello-world", "", False)


def test_a_folder_that_cannot_be_served_is_found_with_the_reason(tmp_path: Path) -> None:
    write_wrapper_model(tmp_path, "good", "Good")
    write_bundle(tmp_path / "no-wrapper" / "asset_bundle", "Lonely", "0.1.0")
    broken = write_bundle(tmp_path / "Broken Folder" / "asset_bundle", "Broken", "0.1.0")
    (broken / "model.yaml").write_text("name: [unclosed\n")
    (tmp_path / "empty").mkdir()

    problems = {model.name: model.problem for model in find_models(tmp_path)}

    assert problems["good"] == ""
    assert problems["lonely"].startswith("no-wrapper/: has no model_lib/ package")
    assert "names no runtime" in problems["lonely"]
    assert problems["broken-folder"].startswith(f"Broken Folder/: {broken / 'model.yaml'}")
    assert problems["empty"] == f"empty/: no asset_bundle/<x.y.z>/model.yaml in {tmp_path / 'empty' / 'asset_bundle'}"


def test_two_folders_with_one_name_are_refused_naming_both(tmp_path: Path) -> None:
    write_wrapper_model(tmp_path, "a", "Same Name")
    write_wrapper_model(tmp_path, "b", "same-name")

    with pytest.raises(RepositoryError, match=r"folders a/ and b/ both serve the model 'same-name'"):
        find_models(tmp_path)


def test_a_missing_or_empty_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"cannot be read: No such file or directory.*--repository"):
        find_models(tmp_path / "absent")
    with pytest.raises(RepositoryError, match="has no model folders"):
        find_models(tmp_path)
