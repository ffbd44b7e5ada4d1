"""The `grpc-model` command: one subcommand per step of a model's life, registered here from the room that
does it (author/, deployment/, calls/, scoring/), in the order `grpc-model --help` lists them.

Each command is a thin layer over the module that does the work (scaffold, testing, the client, the server's
entry point), so the same steps stay scriptable from Python. Those that need gRPC import it when they run, so
`version` and `validate` start in a fraction of a second.
"""

import typer

from grpc_model.src.cli.author import commands as author
from grpc_model.src.cli.author import engine, project
from grpc_model.src.cli.calls import commands as calls
from grpc_model.src.cli.deployment import commands as deployment
from grpc_model.src.cli.scoring import commands as scoring

app = typer.Typer(
    name="grpc-model",
    help="Wrap, test, serve and release a model served over the ModzyModel gRPC protocol.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}  # to the server

app.command()(author.init)
app.command("new-version")(author.new_version)
app.command()(author.validate)
app.command()(author.version)
app.command("k8s")(deployment.kubernetes)
app.command("test")(author.run_tests)
app.command(context_settings=PASS_THROUGH, add_help_option=False)(deployment.serve)
app.command("ray-serve", context_settings=PASS_THROUGH, add_help_option=False)(deployment.ray_serve)
app.command()(project.new)
app.command()(engine.build)
app.command()(calls.status)
app.command()(calls.call)
app.command()(scoring.score)


def main() -> None:
    app(prog_name="grpc-model")
