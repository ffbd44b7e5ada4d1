"""The author's commands `init`, `new-version`, `validate`, `version` and `test`, registered on the app by app.py
(`new` and `build` live beside their work, in project.py and engine.py). Those that need gRPC import it when they
run, so `version` and `validate` start in a fraction of a second.
"""

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from grpc_model.src.cli.author import project, scaffold
from grpc_model.src.cli.author.file_spec import ScaffoldError
from grpc_model.src.cli.client_options import (
    ModelName,
    ModelVersion,
    SecurityOptions,
    Tls,
    TlsCa,
    TlsCert,
    TlsKey,
    TlsServerName,
    Token,
    client_security,
    model_route,
)
from grpc_model.src.cli.output import USAGE, console, fail, settings_from_env, shown
from grpc_model.src.metadata import (
    BundleError,
    available_versions,
    check_bundle,
    load_bundle,
    load_test_cases,
    older_bundle_warning,
)
from grpc_model.src.settings import project_dir

if TYPE_CHECKING:
    from grpc_model.src.cli.author import testing

VersionArgument = Annotated[str, typer.Argument(help="A version of three dot-separated integers, e.g. 0.2.0.")]


def init(
    name: Annotated[str, typer.Argument(help="The model's name, e.g. 'Word Stats'; the class is named after it.")],
    version: project.Version = "0.1.0",
    inputs: project.Inputs = None,
    outputs: project.Outputs = None,
    author: project.Author = "unknown",
    force: Annotated[bool, typer.Option(help="Replace existing files (such as the example model).")] = False,
    model_file: project.ModelFile = None,
    sample: project.Sample = None,
    trusted: project.Trusted = False,
) -> None:
    """Start a new model: a wrapper skeleton, its unit test, model.yaml, docker_metadata.yaml and an empty
    test case folder, all under model_lib/ and asset_bundle/; or, with --from, a bundle that serves a model
    file with no code (and a test case of the library's own answers with --sample).

    Example: `grpc-model init "Word Stats" --input input.txt=text/plain --output results.json=application/json
    --force`, or `grpc-model init Iris --from model.onnx --sample rows.csv --force`
    """
    if model_file is not None:
        _init_from_model(name, version, model_file, sample, author, force, trusted, bool(inputs or outputs))
        return
    try:
        input_files, output_files = project.file_specs(inputs, outputs)
        written = scaffold.init_model(
            project_dir(), settings_from_env().asset_bundle_dir, name, version, input_files, output_files, author, force
        )
    except ScaffoldError as error:
        raise fail(str(error), USAGE) from None
    for path in written:
        console.print(f"  wrote {escape(shown(path))}")
    bundles = settings_from_env().asset_bundle_dir
    for older in [v for v in available_versions(bundles) if v != version]:
        console.print(
            f"  note: {escape(shown(bundles / older))}/ is an older version, not served; "
            "delete it if it is not this model's"
        )
    console.print(
        "Next: fill in the wrapper and model.yaml, add test cases under "
        f"{escape(shown(written[-1].parent))}/, then `grpc-model test`."
    )


def _init_from_model(
    name: str,
    version: str,
    model_file: Path,
    sample: Path | None,
    author: str,
    force: bool,
    trusted: bool,
    files_given: bool,
) -> None:
    from grpc_model.src.cli.author import from_model  # the runtimes, only for --from

    if files_given:
        raise fail(project.FROM_FILES, USAGE)
    bundles = settings_from_env().asset_bundle_dir
    try:
        written = from_model.init_from_model(bundles, name, version, model_file, sample, author, force, trusted)
    except ScaffoldError as error:
        raise fail(str(error), USAGE) from None
    for path in written:
        console.print(f"  wrote {escape(shown(path))}")
    console.print(
        "Next: `grpc-model test`, then `grpc-model serve` (V2 clients send numeric tensors; docs/runtimes.md)."
    )


def new_version(
    version: VersionArgument,
    keep_test_cases: Annotated[
        bool, typer.Option(help="Copy the current version's test cases (only if the model's answers are unchanged).")
    ] = False,
) -> None:
    """Release step: start asset_bundle/VERSION/ from the newest bundle; it is served from then on.

    Example: `grpc-model new-version 0.2.0`
    """
    try:
        made = scaffold.new_version(settings_from_env().asset_bundle_dir, version, keep_test_cases)
    except ScaffoldError as error:
        raise fail(str(error), USAGE) from None
    console.print(f"version {made.old} -> {made.new}: created {escape(shown(made.path))}/ (served from now on)")
    if made.copied_cases:
        console.print(f"  copied {len(made.copied_cases)} test case(s): {escape(', '.join(made.copied_cases))}")
        console.print("  They expect the old model's answers: if the model changed, update their expected outputs.")
    else:
        console.print(
            "  copied no test cases: add cases with this model's expected outputs "
            "(or start again with --keep-test-cases if its answers did not change)."
        )
    console.print(f"Next: edit releaseNotes and what changed in {escape(shown(made.path))}/model.yaml.")


def validate(
    version: Annotated[str | None, typer.Argument(help="The bundle version; default: the served one.")] = None,
) -> None:
    """Check model.yaml, docker_metadata.yaml and every test case of a bundle; exit 0 valid, 1 invalid.

    Example: `grpc-model validate 0.2.0`
    """
    settings = settings_from_env()
    report = check_bundle(settings.asset_bundle_dir, version or settings.model_version)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    for problem in report.problems:
        console.print(f"[red]invalid:[/red] {escape(problem)}")
    if report.problems or report.bundle is None:
        raise typer.Exit(1)
    console.print(f"[green]valid:[/green] {escape(shown(report.bundle.path))} ({report.cases} test case(s))")


def version() -> None:
    """Print the served model version: the newest asset_bundle/X.Y.Z/, unless GRPC_MODEL_MODEL_VERSION says.

    Example: `docker build -t my-model:$(grpc-model version) .`
    """
    settings = settings_from_env()
    try:
        print(load_bundle(settings.asset_bundle_dir, settings.model_version).version)
    except BundleError as error:
        raise fail(str(error)) from None


def run_tests(
    server: Annotated[
        list[str] | None,
        typer.Option(
            metavar="HOST:PORT",
            help="Run the test cases against this running server; repeat it (or a,b) for several, round robin, "
            "or give one dns:///NAME:PORT target.",
        ),
    ] = None,
    image: Annotated[bool, typer.Option("--image", help="Build the image and test it in a container.")] = False,
    junit: Annotated[Path | None, typer.Option(help="Also write the results as a JUnit XML file.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per call with --server.")] = 60.0,
    model_name: ModelName = None,
    model_version: ModelVersion = None,
    tls: Tls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token: Token = None,
) -> None:
    """Run the author's checks: model_lib/tests, then the served bundle's test cases through the wrapper
    in-process (default), a running server (--server) or the built image (--image).

    Example: `grpc-model test --server localhost:45000 --junit results.xml`
    """
    if server and image:
        raise fail("choose --server or --image, not both", USAGE)
    if (model_name is not None or model_version is not None) and not server:
        raise fail("--model-name and --model-version choose a model on a server: add --server HOST:PORT", USAGE)
    route = model_route(model_name, model_version)
    from grpc_model.src.cli.author import testing  # gRPC and the runtime, only when testing
    from grpc_model.src.client import server_list

    settings = settings_from_env()
    report = check_bundle(settings.asset_bundle_dir, settings.model_version)
    older = older_bundle_warning(report.bundle) if report.bundle is not None else None
    if older:
        console.print(f"[yellow]warning:[/yellow] {escape(older)}")
    with tempfile.TemporaryDirectory() as scratch:
        unit_junit = Path(scratch) / "unit.xml" if junit else None
        console.rule("unit tests: model_lib/tests")
        suites = [testing.Suite("model_lib/tests", [testing.run_unit_tests(project_dir(), unit_junit)])]
        suites.append(testing.Suite("metadata", [testing.Outcome("grpc-model validate", report.problems)]))
        if report.bundle is not None and not report.problems:
            bundle = report.bundle
            cases = load_test_cases(bundle)
            if not cases:
                suites[-1].outcomes.append(testing.Outcome("test cases", [f"no test cases in {bundle.test_cases_dir}"]))
            elif image:
                console.rule("the image")
                suites.append(testing.Suite("image", [testing.run_image(project_dir())]))
            elif server:
                servers = server_list(server)
                console.rule(f"test cases of {bundle.version} against {', '.join(servers)}")
                options = SecurityOptions(tls, tls_ca, tls_cert, tls_key, tls_server_name, token)
                security = client_security(options)
                outcomes = testing.run_cases_on_server(bundle, cases, servers, timeout, security, route)
                suites.append(testing.Suite(",".join(servers), outcomes))
            else:
                console.rule(f"test cases of {bundle.version} through {settings.model_class}")
                suites.append(
                    testing.Suite("in-process", testing.run_cases_in_process(bundle, cases, settings.model_class))
                )
        if junit:
            testing.write_junit(junit, suites, unit_junit)
    _print_suites(suites)
    if older:  # again under the summary, where a failure of the older cases is read
        console.print(f"[yellow]warning:[/yellow] {escape(older)}")
    if not all(suite.passed for suite in suites):
        raise typer.Exit(1)


def _print_suites(suites: "list[testing.Suite]") -> None:
    console.rule("summary")
    for suite in suites:
        for outcome in suite.outcomes:
            mark = "[green]PASS[/green]" if outcome.passed else "[red]FAIL[/red]"
            note = f" ({escape(outcome.note)})" if outcome.note else ""
            console.print(f"{mark} {escape(suite.name)}: {escape(outcome.name)}{note}")
            for problem in outcome.problems:
                console.print(f"    {escape(problem)}")
    failed = sum(not outcome.passed for suite in suites for outcome in suite.outcomes)
    total = sum(len(suite.outcomes) for suite in suites)
    console.print(f"{total - failed} of {total} passed" if failed else f"[green]all {total} passed[/green]")
