"""`grpc-model validate`: every problem of a bundle at once, instead of the first one at start-up."""

from dataclasses import dataclass, field
from pathlib import Path

from grpc_model.src.metadata.bundle import DOCKER_METADATA_YAML, AssetBundle, BundleError, load_bundle, parse_file
from grpc_model.src.metadata.schema import DockerMetadata
from grpc_model.src.metadata.test_cases import case_dirs, read_test_case


@dataclass
class BundleReport:
    """What `validate` found; the bundle is valid when `problems` is empty (warnings do not count)."""

    bundle: AssetBundle | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cases: int = 0


def check_bundle(root: Path, version: str = "") -> BundleReport:
    """Checks `model.yaml`, `docker_metadata.yaml` and every test case of one bundle version."""
    report = BundleReport()
    try:
        report.bundle = bundle = load_bundle(root, version)
    except BundleError as error:
        report.problems.append(str(error))
        return report
    if bundle.docker is None:
        docker_path = bundle.path / DOCKER_METADATA_YAML
        try:
            parse_file(docker_path, DockerMetadata)
        except BundleError as error:
            report.problems.append(str(error))
    cases = case_dirs(bundle.test_cases_dir) if bundle.test_cases_dir.is_dir() else []
    if not cases:
        report.warnings.append(
            f"{bundle.test_cases_dir}: no test cases; `grpc-model test` needs at least one "
            "(a directory with the input files and the expected output files)"
        )
    for path in cases:
        case, problems = read_test_case(path, bundle.spec.inputs, bundle.spec.outputs)
        report.problems += [f"{path}: {problem}" for problem in problems]
        report.cases += case is not None
    return report
