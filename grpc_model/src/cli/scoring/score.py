"""`grpc-model score`: batch scoring of many items through running servers, or in this process.

Items go out in calls of `batch_size` items, `concurrency` calls at a time, spread over the
servers given by gRPC's round robin (the reference client's channel). RESOURCE_EXHAUSTED and
UNAVAILABLE are retried with back-off until a server answers (an item is never dropped); any
other error fails that call's items with its message.
Each answer is written as it arrives (score_results.py), so Ctrl-C or a kill loses nothing that was
answered, and running again with the same results file scores only what is missing.
"""

import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import ModzyModelStub
from grpc_model.src.cli.scoring.backend import Answer, Backend, Options
from grpc_model.src.cli.scoring.score_io import (
    ERROR,
    ID,
    SUCCESS,
    Item,
    ScoreInputError,
    check_declared,
    one_line,
    read_items,
)
from grpc_model.src.cli.scoring.score_results import ResultWriter
from grpc_model.src.client import channel_options, channel_target, open_channel, server_list

if TYPE_CHECKING:  # only in the stubs' .pyi: at run time an aio channel's ModzyModelStub is the async one
    from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import ModzyModelAsyncStub

RETRIED = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
FIRST_BACKOFF, MAX_BACKOFF = 0.05, 2.0
PLAIN_PROGRESS_SECONDS = 10.0
_Response = TypeVar("_Response")


@dataclass
class Tally:
    """What the run did, for the summary and the exit code."""

    total: int = 0
    skipped: int = 0
    succeeded: int = 0
    retries: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def answered(self) -> int:
        return self.succeeded + self.failed


class Servers:
    """The servers of `--server a:1,b:2` (or one `dns:///` target) behind one channel that balances round robin."""

    def __init__(self, targets: Sequence[str], options: Options, tally: Tally) -> None:
        self.targets = server_list(targets)
        self.channel = open_channel(channel_target(self.targets), options.security, channel_options(), aio=True)
        self.channel.get_state(try_to_connect=True)  # connect to every server while Status calls go out
        self.stub: ModzyModelAsyncStub = ModzyModelStub(self.channel)
        self.options, self.tally = options, tally

    async def status(self) -> pb.StatusResponse:
        """Each listed server's Status of the routed model, retried while unavailable (it also loads a model that
        loads on demand); the first answer that is not 200, else the first. Replicas behind one `dns:///` target
        get one call."""
        answers = [await self._status_of(target) for target in self.targets]
        return next((answer for answer in answers if answer.status_code != 200), answers[0])

    async def _status_of(self, target: str) -> pb.StatusResponse:
        async with open_channel(target, self.options.security, channel_options(), aio=True) as channel:
            stub: ModzyModelAsyncStub = ModzyModelStub(channel)
            return await self._retrying(
                lambda _: stub.Status(
                    pb.StatusRequest(), timeout=self.options.timeout, metadata=self.options.route.metadata
                )
            )

    async def run(self, items: list[dict[str, bytes]]) -> list[Answer]:
        request = pb.RunRequest(
            inputs=[pb.InputItem(input=item) for item in items],
            detect_drift=self.options.detect_drift,
            explain=self.options.explain,
        )
        try:
            response = await self._retrying(
                lambda stub: stub.Run(request, timeout=self.options.timeout, metadata=self.options.route.metadata)
            )
        except grpc.aio.AioRpcError as error:
            return [(False, {ERROR: f"{error.code().name}: {error.details()}".encode()})] * len(items)
        if len(response.outputs) != len(items):
            message = f"the server answered {len(response.outputs)} outputs for {len(items)} items: {response.message}"
            return [(False, {ERROR: message.encode()})] * len(items)
        return [(output.success, dict(output.output)) for output in response.outputs]

    async def _retrying(self, call: Callable[["ModzyModelAsyncStub"], Awaitable[_Response]]) -> _Response:
        backoff = FIRST_BACKOFF
        while True:
            try:
                return await call(self.stub)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRIED:
                    raise
            self.tally.retries += 1
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))  # jitter: retries of many calls spread out
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def close(self) -> None:
        await self.channel.close()


class Reporter:
    """A rich progress bar on a terminal; elsewhere (CI logs, files) a plain line every few seconds."""

    def __init__(self, console: Console, total: int, done: int, every: float = PLAIN_PROGRESS_SECONDS) -> None:
        self.console, self.total, self.done, self.every = console, total, done, every
        self.started = self.last_line = time.monotonic()
        self.count = 0
        self.progress: Progress | None = None
        if console.is_terminal:
            self.progress = Progress(
                TextColumn("scoring"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=console,
            )
            self.task = self.progress.add_task("score", total=total, completed=done, rate="")
            self.progress.start()

    def advance(self, items: int) -> None:
        self.count += items
        now = time.monotonic()
        rate = self.count / max(now - self.started, 1e-9)
        if self.progress is not None:
            self.progress.update(self.task, advance=items, rate=f"{rate:,.0f} items/s")
        elif now - self.last_line >= self.every:
            self.last_line = now
            done = self.done + self.count
            left = (self.total - done) / rate if rate else 0.0
            self.console.print(f"scored {done} of {self.total} items, {rate:,.0f} items/s, about {left:,.0f} s left")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


async def score_items(
    items: list[Item], writer: ResultWriter, backend: Backend, options: Options, reporter: Reporter, tally: Tally
) -> None:
    """Scores every item not yet in `writer`, `options.concurrency` calls at a time; stops early on SIGINT."""
    todo = [item for item in items if item.id not in writer.done]
    batches = [todo[i : i + options.batch_size] for i in range(0, len(todo), options.batch_size)]
    queue: asyncio.Queue[list[Item]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def worker() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            try:
                inputs = [item.read() for item in batch]
            except ScoreInputError as error:
                answers: list[Answer] = [(False, {ERROR: str(error).encode()})] * len(batch)
            else:
                answers = await backend(inputs)
            for item, (success, output) in zip(batch, answers, strict=True):
                writer.write(item.id, success, output)
                if success:
                    tally.succeeded += 1
                else:
                    tally.failures[one_line(output.get(ERROR, b"").decode("utf-8", "replace"))] += 1
            writer.flush()
            reporter.advance(len(batch))

    workers = [asyncio.ensure_future(worker()) for _ in range(min(options.concurrency, len(batches)) or 1)]
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers off the main thread
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
    stopper = asyncio.ensure_future(interrupted.wait())
    try:
        everything: asyncio.Future[Any] = asyncio.gather(*workers)
        waited: list[asyncio.Future[Any]] = [stopper, everything]
        await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        if everything.done():
            everything.result()  # a worker's unexpected error is the command's, not silently dropped
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        tally.interrupted = interrupted.is_set()
        for task in [*workers, stopper]:
            task.cancel()  # calls in flight are dropped unanswered: a later run scores their items
        await asyncio.gather(*workers, stopper, return_exceptions=True)


def print_summary(console: Console, tally: Tally, out: Path) -> None:
    rate = tally.answered / tally.seconds if tally.seconds else 0.0
    head = "[yellow]interrupted[/yellow]: " if tally.interrupted else ""
    console.print(
        f"{head}scored {tally.answered} item(s) in {tally.seconds:.1f} s ({rate:,.1f} items/s): "
        f"{tally.succeeded} succeeded, {tally.failed} failed; {tally.skipped} already in {escape(str(out))}"
        + (f"; {tally.retries} call(s) retried" if tally.retries else "")
    )
    left = tally.total - tally.skipped - tally.answered
    if left:
        console.print(f"{left} item(s) not scored yet: run the same command again to score them")
    for message, count in tally.failures.most_common(10):
        console.print(f"  [red]{count} failed:[/red] {escape(message)}")
    if len(tally.failures) > 10:
        console.print(
            f"  ...and {len(tally.failures) - 10} other message(s); see the error column of {escape(str(out))}"
        )


async def run_score(
    console: Console,
    errors: Console,
    inputs: Path,
    out: Path,
    targets: Sequence[str],
    in_process: tuple[str, Path, str] | None,
    options: Options,
) -> Tally:
    """The command: `targets` (servers), or `in_process` = (model class, asset bundle dir, version)."""
    tally = Tally()
    servers = None
    try:
        if in_process is not None:
            from grpc_model.src.cli.scoring.score_local import local_backend  # the model's imports, only in-process

            input_names, output_names, backend = local_backend(*in_process, options)
            who = "the served model's model.yaml"
        else:
            servers = Servers(targets, options, tally)
            status = await servers.status()
            if status.status_code != 200:
                raise ScoreInputError(f"{targets[0]}: Status answered {status.status_code}: {status.message}")
            input_names = [i.filename for i in status.inputs]
            output_names = [o.filename for o in status.outputs]
            backend = servers.run
            who = f"{','.join(targets)}: the server"
        check_declared(who, "input", input_names)  # a server's names never pick a file to read or write
        check_declared(who, "output", output_names, reserved=(ID, SUCCESS, ERROR))  # a row's own columns
        items = read_items(inputs, input_names, options.paths_outside)
        writer = ResultWriter(out, output_names, [item.id for item in items])
        tally.total = len(items)
        tally.skipped = sum(item.id in writer.done for item in items)
        reporter = Reporter(errors, tally.total, tally.skipped)
        started = time.monotonic()
        try:
            await score_items(items, writer, backend, options, reporter, tally)
        finally:
            tally.seconds = time.monotonic() - started
            reporter.stop()
            writer.close()
    finally:
        if servers is not None:
            await servers.close()
    print_summary(console, tally, out)
    return tally
