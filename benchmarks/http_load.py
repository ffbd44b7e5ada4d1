"""REST calls for the shared load driver (benchmarks/load.py): aiohttp, one kept-alive connection per caller.

The connector holds at most as many connections as there are callers, and a call takes an idle kept-alive
one, so at steady state each concurrent caller has a connection of its own and no call pays a handshake.
"""

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from benchmarks.load import Call

Check = Callable[[Any], bool]
"""Whether a decoded JSON answer is what the call expected."""


@asynccontextmanager
async def json_caller(url: str, body: Any, check: Check, concurrency: int, seconds: float = 120) -> AsyncIterator[Call]:
    """A call that POSTs `body` as JSON to `url`; an error status, a broken connection or a failed `check`
    counts as an error, never as a crash of the benchmark."""
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=seconds), raise_for_status=False
    ) as session:

        async def call() -> bool:
            try:
                async with session.post(url, data=data, headers=headers) as response:
                    answer = await response.read()
                    return response.status == 200 and check(json.loads(answer))
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return False

        yield call
