"""The `grpc-model` command: one subcommand per step of a model's life.

Each command is a thin layer over the module that does the work (scaffold, testing, the
client, the server's entry point), so the same steps stay scriptable from Python. Those that
need gRPC import it when they run, so `version` and `validate` start in a fraction of a second.
"""

import asyncio
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from grpc_model.src.cli import scaffold
from grpc_model.src.cli.client_options import SecurityOptions, Tls, TlsCa, TlsCert, TlsKey, TlsServerName, Token
from grpc_model.src.metadata import BundleError, available_versions, check_bundle, load_bundle, load_test_cases
from grpc_model.src.settings import PROJECT_ROOT, Settings, describe_settings_error

if TYPE_CHECKING:
    from grpc_model.src.cli import testing
    from grpc_model.src.security.channel import ClientSecurity

app = typer.Typer(
    name="grpc-model",
    help="Wrap, test, serve and release a model served over the ModzyModel gRPC protocol.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)
console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

KUBERNETES_DIR = PROJECT_ROOT / "deploy" / "kubernetes"
USAGE = 2  # exit code for a command that cannot run as asked, as argparse and click use


def _fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def _settings() -> Settings:
    """The server's settings from the environment, so every command sees the model the server would serve."""
    try:
        return Settings()
    except ValidationError as error:
        raise _fail(f"invalid settings in the environment:\n{describe_settings_error(error)}", USAGE) from None


VersionArgument = Annotated[str, typer.Argument(help="A version of three dot-separated integers, e.g. 0.2.0.")]


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="The model's name, e.g. 'Word Stats'; the class is named after it.")],
    version: Annotated[str, typer.Option(help="The first version.")] = "0.1.0",
    inputs: Annotated[
        list[str] | None, typer.Option("--input", help="An input file, FILE=MEDIA_TYPE; repeat for more.")
    ] = None,
    outputs: Annotated[
        list[str] | None, typer.Option("--output", help="An output file, FILE=MEDIA_TYPE; repeat for more.")
    ] = None,
    author: Annotated[str, typer.Option(help="Who made the model (model.yaml's author).")] = "unknown",
    force: Annotated[bool, typer.Option(help="Replace existing files (such as the example model).")] = False,
) -> None:
    """Start a new model: a wrapper skeleton, its unit test, model.yaml, docker_metadata.yaml and an empty
    test case folder, all under model_lib/ and asset_bundle/.

    Example: `grpc-model init "Word Stats" --input input.txt=text/plain --output results.json=application/json
    --force`
    """
    try:
        input_files = [scaffold.FileSpec.parse(text) for text in inputs or ["input.txt=text/plain"]]
        output_files = [scaffold.FileSpec.parse(text) for text in outputs or ["results.json=application/json"]]
        written = scaffold.init_model(
            PROJECT_ROOT, _settings().asset_bundle_dir, name, version, input_files, output_files, author, force
        )
    except scaffold.ScaffoldError as error:
        raise _fail(str(error), USAGE) from None
    for path in written:
        console.print(f"  wrote {escape(_shown(path))}")
    bundles = _settings().asset_bundle_dir
    for older in [v for v in available_versions(bundles) if v != version]:
        console.print(
            f"  note: {escape(_shown(bundles / older))}/ is an older version, not served; "
            "delete it if it is not this model's"
        )
    console.print(
        "Next: fill in the wrapper and model.yaml, add test cases under "
        f"{escape(_shown(written[-1].parent))}/, then `grpc-model test`."
    )


@app.command("new-version")
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
        made = scaffold.new_version(_settings().asset_bundle_dir, version, keep_test_cases)
    except scaffold.ScaffoldError as error:
        raise _fail(str(error), USAGE) from None
    console.print(f"version {made.old} -> {made.new}: created {escape(_shown(made.path))}/ (served from now on)")
    if made.copied_cases:
        console.print(f"  copied {len(made.copied_cases)} test case(s): {escape(', '.join(made.copied_cases))}")
        console.print("  They expect the old model's answers: if the model changed, update their expected outputs.")
    else:
        console.print(
            "  copied no test cases: add cases with this model's expected outputs "
            "(or start again with --keep-test-cases if its answers did not change)."
        )
    console.print(f"Next: edit releaseNotes and what changed in {escape(_shown(made.path))}/model.yaml.")


@app.command()
def validate(
    version: Annotated[str | None, typer.Argument(help="The bundle version; default: the served one.")] = None,
) -> None:
    """Check model.yaml, docker_metadata.yaml and every test case of a bundle; exit 0 valid, 1 invalid.

    Example: `grpc-model validate 0.2.0`
    """
    settings = _settings()
    report = check_bundle(settings.asset_bundle_dir, version or settings.model_version)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    for problem in report.problems:
        console.print(f"[red]invalid:[/red] {escape(problem)}")
    if report.problems or report.bundle is None:
        raise typer.Exit(1)
    console.print(f"[green]valid:[/green] {escape(_shown(report.bundle.path))} ({report.cases} test case(s))")


@app.command()
def version() -> None:
    """Print the served model version: the newest asset_bundle/X.Y.Z/, unless GRPC_MODEL_MODEL_VERSION says.

    Example: `docker build -t my-model:$(grpc-model version) .`
    """
    settings = _settings()
    try:
        print(load_bundle(settings.asset_bundle_dir, settings.model_version).version)
    except BundleError as error:
        raise _fail(str(error)) from None


@app.command("k8s")
def kubernetes(
    out: Annotated[Path, typer.Option(help="Where to write the kustomize base and overlays.")] = KUBERNETES_DIR,
    image: Annotated[
        str | None,
        typer.Option(help="The image to run; default: from docker_metadata.yaml, tagged with the served version."),
    ] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Replicas without an autoscaler.")] = 2,
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 if the files there differ from what would be written."),
    ] = False,
) -> None:
    """Deployment step: write the Kubernetes manifests of the served model (a kustomize base and overlays for
    an HPA, KEDA, KServe) from its model.yaml; run it again whenever model.yaml changes.

    Example: `grpc-model k8s && kubectl apply -k deploy/kubernetes/overlays/hpa`
    """
    from grpc_model.src.cli import kubernetes_layout as layout
    from grpc_model.src.cli.kubernetes import Target, default_image

    settings = _settings()
    try:
        bundle = load_bundle(settings.asset_bundle_dir, settings.model_version)
    except BundleError as error:
        raise _fail(str(error)) from None
    files = layout.render(Target(bundle, settings, image or default_image(bundle), replicas))
    if check:
        stale = layout.stale_files(out, files)
        for name in stale:
            errors.print(f"[red]stale:[/red] {escape(_shown(out / name))}")
        if stale:
            raise _fail(f"{_shown(out)} is not what model.yaml gives: run `grpc-model k8s` and commit the result")
        console.print(f"[green]up to date:[/green] {escape(_shown(out))} ({len(files)} files)")
        return
    for path in layout.write(out, files):
        console.print(f"  wrote {escape(_shown(path))}")
    console.print(f"Next: `kubectl apply -k {escape(_shown(out))}/overlays/hpa` (docs/deploy.md)")


@app.command("test")
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
        raise _fail("choose --server or --image, not both", USAGE)
    from grpc_model.src.cli import testing  # gRPC and the runtime, only when testing
    from grpc_model.src.client import server_list

    settings = _settings()
    report = check_bundle(settings.asset_bundle_dir, settings.model_version)
    with tempfile.TemporaryDirectory() as scratch:
        unit_junit = Path(scratch) / "unit.xml" if junit else None
        console.rule("unit tests: model_lib/tests")
        suites = [testing.Suite("model_lib/tests", [testing.run_unit_tests(PROJECT_ROOT, unit_junit)])]
        suites.append(testing.Suite("metadata", [testing.Outcome("grpc-model validate", report.problems)]))
        if report.bundle is not None and not report.problems:
            bundle = report.bundle
            cases = load_test_cases(bundle)
            if not cases:
                suites[-1].outcomes.append(testing.Outcome("test cases", [f"no test cases in {bundle.test_cases_dir}"]))
            elif image:
                console.rule("the image")
                suites.append(testing.Suite("image", [testing.run_image(PROJECT_ROOT)]))
            elif server:
                servers = server_list(server)
                console.rule(f"test cases of {bundle.version} against {', '.join(servers)}")
                security = _security(SecurityOptions(tls, tls_ca, tls_cert, tls_key, tls_server_name, token))
                outcomes = testing.run_cases_on_server(bundle, cases, servers, timeout, security)
                suites.append(testing.Suite(",".join(servers), outcomes))
            else:
                console.rule(f"test cases of {bundle.version} through {settings.model_class}")
                suites.append(
                    testing.Suite("in-process", testing.run_cases_in_process(bundle, cases, settings.model_class))
                )
        if junit:
            testing.write_junit(junit, suites, unit_junit)
    _print_suites(suites)
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


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def serve(ctx: typer.Context) -> None:
    """Serve the model (the flags of python -m grpc_model.src.model_server; see grpc-model serve --help).

    Example: `grpc-model serve --port 45000 --workers 2`
    """
    from grpc_model.src import model_server  # the server's imports, only when serving

    raise typer.Exit(model_server.main(ctx.args, prog="grpc-model serve"))


@app.command(
    "ray-serve",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def ray_serve(ctx: typer.Context) -> None:
    """Serve the model on Ray Serve behind Ray's gRPC proxy (the flags of serve, plus the ray_* settings; needs
    the `ray` dependency group; see docs/deploy.md).

    Example: `grpc-model ray-serve --port 45000 --ray-replicas 2`
    """
    try:
        from grpc_model.src.ray_serve import command  # Ray, only when serving on it
    except ImportError as error:
        raise _fail(f"Ray Serve is not installed ({error}): scripts/dev.sh install --with ray", USAGE) from None

    raise typer.Exit(command.main(ctx.args))


TargetArgument = Annotated[str, typer.Argument(metavar="HOST:PORT", help="The server.")]


@app.command()
def status(
    target: TargetArgument = "localhost:45000",
    timeout: Annotated[float, typer.Option(help="Seconds per call.")] = 30.0,
    tls: Tls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token: Token = None,
) -> None:
    """Show a server's Status answer and health; exit 0 only if Status is 200 and health SERVING.

    Example: `grpc-model status localhost:45000`
    """
    from grpc_model.src.cli import remote  # gRPC, only when calling a server

    security = _security(SecurityOptions(tls, tls_ca, tls_cert, tls_key, tls_server_name, token))
    raise typer.Exit(remote.show_status(console, target, timeout, security))


@app.command()
def call(
    target: TargetArgument = "localhost:45000",
    inputs: Annotated[
        list[str] | None, typer.Option("--input", help="An input file of the item, NAME=PATH; repeat for more.")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Write the output files here instead of printing them.")
    ] = None,
    detect_drift: Annotated[bool, typer.Option(help="Set detect_drift on the call.")] = False,
    explain: Annotated[bool, typer.Option(help="Set explain on the call.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds for the call.")] = 60.0,
    tls: Tls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token: Token = None,
) -> None:
    """Send one item to a server and print (or write) its outputs; exit 0 only if the item succeeded.

    Example: `grpc-model call localhost:45000 --input input.txt=hello.txt`
    """
    from grpc_model.src.cli import remote  # gRPC, only when calling a server

    security = _security(SecurityOptions(tls, tls_ca, tls_cert, tls_key, tls_server_name, token))
    raise typer.Exit(
        remote.call_once(console, target, inputs or [], output_dir, detect_drift, explain, timeout, security)
    )


@app.command()
def score(
    inputs: Annotated[
        Path, typer.Argument(help="A folder (a file or a subfolder per item), a .jsonl or a .csv file of items.")
    ],
    out: Annotated[Path, typer.Option(help="The results, .jsonl or .csv; run again with the same file to resume.")],
    server: Annotated[
        list[str] | None,
        typer.Option(
            metavar="HOST:PORT",
            help="A server (default localhost:45000); repeat it (or a,b) for several, round robin, "
            "or give one dns:///NAME:PORT target.",
        ),
    ] = None,
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Run the served model in this process instead of calling a server.")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Items per Run call.")] = 8,
    concurrency: Annotated[int, typer.Option(min=1, help="Run calls in flight at once.")] = 8,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds per call (its deadline).")] = 60.0,
    detect_drift: Annotated[bool, typer.Option(help="Set detect_drift on every call.")] = False,
    explain: Annotated[bool, typer.Option(help="Set explain on every call.")] = False,
    allow_failures: Annotated[bool, typer.Option(help="Exit 0 even if some items failed.")] = False,
    tls: Tls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token: Token = None,
) -> None:
    """Score many items through running servers (or --in-process) into a JSONL or CSV file, resumably.

    Exit code 0 when every item succeeded, 1 if any failed (unless --allow-failures), 2 for bad
    arguments or inputs, 130 after Ctrl-C (everything answered so far is written).

    Example: `grpc-model score images/ --server localhost:45000 --out results.csv`
    """
    import grpc

    from grpc_model.src.cli import score as scoring  # gRPC, only when scoring
    from grpc_model.src.cli.score_io import ScoreInputError
    from grpc_model.src.client import TargetError, server_list

    security = _security(SecurityOptions(tls, tls_ca, tls_cert, tls_key, tls_server_name, token))
    options = scoring.Options(batch_size, concurrency, timeout, detect_drift, explain, security)
    settings = _settings()
    local = (settings.model_class, settings.asset_bundle_dir, settings.model_version) if in_process else None
    targets = server_list(server or ["localhost:45000"])
    try:
        tally = asyncio.run(scoring.run_score(console, errors, inputs, out, targets, local, options))
    except (ScoreInputError, TargetError) as error:
        raise _fail(str(error), USAGE) from None
    except grpc.aio.AioRpcError as error:
        raise _fail(f"{','.join(targets)}: {error.code().name}: {error.details()}") from None
    if tally.interrupted:
        raise typer.Exit(130)
    if tally.failed and not allow_failures:
        raise typer.Exit(1)


def _security(options: SecurityOptions) -> "ClientSecurity":
    """The client's transport security from the options; checked now, so a wrong file is a usage error."""
    from grpc_model.src.security.channel import ClientSecurityError

    security = options.resolve()
    try:
        security.channel_credentials()
    except ClientSecurityError as error:
        raise _fail(str(error), USAGE) from None
    return security


def _shown(path: Path) -> str:
    """A path as the author would type it: relative to the project when it is inside."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def main() -> None:
    app(prog_name="grpc-model")
