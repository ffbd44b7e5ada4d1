"""`grpc-model status` and `grpc-model call`: a running server, as a person reads it."""

from pathlib import Path

import grpc
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from grpc_model.src.client import DEFAULT_MODEL, PLAINTEXT, InputError, ModelClient, ModelRoute, read_inputs, render
from grpc_model.src.metadata.names import file_name_problem
from grpc_model.src.security.channel import ClientSecurity


def show_status(
    console: Console,
    target: str,
    timeout: float,
    security: ClientSecurity = PLAINTEXT,
    route: ModelRoute = DEFAULT_MODEL,
) -> int:
    """Prints the routed model's Status, the server's health and a named model's; 0 only when the model is loaded
    and both are SERVING."""
    with ModelClient(target, timeout=timeout, security=security, route=route) as client:
        try:
            status = client.status()  # first: it loads a model that loads on demand
            health = client.health()
        except grpc.RpcError as error:
            console.print(f"[red]{escape(target)}: {error.code().name}: {escape(str(error.details()))}[/red]")
            return 1
        model_health = _model_health(client, route.name) if route.name else "SERVING"
    info = status.model_info
    table = Table(show_header=False, box=None)
    table.add_row("server", target)
    if route != DEFAULT_MODEL:
        table.add_row("asked for", str(route))
    table.add_row("health", health)
    if route.name:
        table.add_row("model health", f"{model_health} (the health service {route.name})")
    table.add_row("status", f"{status.status_code} {status.status}: {status.message}")
    table.add_row("model", f"{info.model_name} {info.model_version} by {info.model_author}")
    table.add_row("inputs", ", ".join(f"{i.filename} ({', '.join(i.accepted_media_types)})" for i in status.inputs))
    table.add_row("outputs", ", ".join(f"{o.filename} ({o.media_type})" for o in status.outputs))
    table.add_row("max batch", str(status.features.batch_size))
    table.add_row("timeouts", f"status {status.timeout.status or '-'}, run {status.timeout.run or '-'}")
    console.print(table)
    return 0 if status.status_code == 200 and health == model_health == "SERVING" else 1


def _model_health(client: ModelClient, name: str) -> str:
    """The health service a server of several models keeps for each by its name; a server that routes by no
    name has none (NOT_FOUND), which is how one that ignored the name shows."""
    try:
        return client.health(name)
    except grpc.RpcError as error:
        return str(error.code().name)


def call_once(
    console: Console,
    target: str,
    pairs: list[str],
    output_dir: Path | None,
    detect_drift: bool,
    explain: bool,
    timeout: float,
    security: ClientSecurity = PLAINTEXT,
    route: ModelRoute = DEFAULT_MODEL,
) -> int:
    """Sends one item made of `NAME=PATH` files to the routed model; prints or writes its outputs."""
    with ModelClient(target, timeout=timeout, security=security, route=route) as client:
        try:
            status = client.status()
            item = read_inputs(pairs, [i.filename for i in status.inputs])
            response = client.run([item], detect_drift, explain)
        except grpc.RpcError as error:
            console.print(f"[red]{escape(target)}: {error.code().name}: {escape(str(error.details()))}[/red]")
            return 1
        except InputError as error:
            console.print(f"[red]error:[/red] {escape(str(error))}")
            return 2
    if not response.outputs:
        console.print(f"[red]no output: {response.status_code} {escape(response.message)}[/red]")
        return 1
    output = response.outputs[0]
    if output_dir is not None and output.success:
        odd = [f"{name!r} {why}" for name in output.output if (why := file_name_problem(name)) is not None]
        if odd:  # a server's name must not choose where its bytes land: `..`, `a/x`, or one file for two outputs
            console.print(
                f"[red]error:[/red] the server answered outputs that are not plain file names, "
                f"nothing was written: {escape(', '.join(odd))}"
            )
            return 2
    console.print("[green]success[/green]" if output.success else "[red]failed[/red]")
    for name, content in output.output.items():
        if output_dir is not None and output.success:
            path = output_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            console.print(f"  {escape(name)} -> {escape(str(path))} ({len(content)} bytes)")
        else:
            console.print(f"  {escape(name)}: {escape(render(content))}")
    return 0 if output.success else 1
