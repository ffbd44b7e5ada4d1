"""What every `grpc-model` command shares: the consoles, the usage exit code, errors, the settings, paths."""

from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from grpc_model.src.settings import Settings, describe_settings_error

# Soft wrap: a long line (a call's JSON output, a command to copy, a failure message) stays one line for a pipe,
# `jq` or `grep`, and a terminal wraps it on screen; tables and rules still fit the terminal's width.
console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

USAGE = 2  # exit code for a command that cannot run as asked, as argparse and click use


def fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def settings_from_env() -> Settings:
    """The server's settings from the environment, so every command sees the model the server would serve."""
    try:
        return Settings()
    except ValidationError as error:
        raise fail(f"invalid settings in the environment:\n{describe_settings_error(error)}", USAGE) from None


def shown(path: Path) -> str:
    """A path as the author would type it: relative to the project when it is inside."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)
