"""The model profiles of the peer comparison, and the model code each peer runs for them.

Every peer runs the same work per profile, written in its own API: `echo` returns the input, `device`
takes 20 ms per batch call, one call at a time (a lock in the peers' code, `--model-threads 1` here;
batches of up to 32 where the peer batches), `cpu` runs `benchmarks.models.burn_cpu` (its very source,
copied into the peer's model file) for 5 ms per item. A new profile, such as the scikit-learn runtime's,
is a row of PROFILES plus a model body in each peer's module (ours.py, mlserver.py with the runtimes in
benchmarks/mlserver.py, litserve.py, bentoml.py); a peer without one for a profile is left out of its rows.
"""

import inspect
from dataclasses import dataclass

from benchmarks.models import COST_SECONDS, burn_cpu

PAYLOAD = "x" * 64
"""One item: 64 ASCII bytes, sent as a BYTES element (V2) or a JSON string (LitServe, BentoML)."""
MAX_BATCH = 32
BATCH_WAIT_S = 0.005
"""How long a peer's batcher may wait to fill a batch, where it asks (MLServer, LitServe)."""


@dataclass(frozen=True)
class PeerProfile:
    name: str
    concurrency: int
    what: str


PROFILES = {
    profile.name: profile
    for profile in (
        PeerProfile("echo", 32, "no work: the framework's own cost per call"),
        PeerProfile("device", 64, f"{COST_SECONDS * 1000:g} ms per batch call of up to {MAX_BATCH}, one at a time"),
        PeerProfile("cpu", 8, "5 ms of pure-Python CPU per item, GIL held; 2 worker processes"),
    )
}


def burn_cpu_source(iterations: int) -> str:
    """`burn_cpu`'s own source with its iteration count, for a peer's model file: the same loop as ours."""
    return f"CPU_ITERATIONS = {iterations}\n\n\n{inspect.getsource(burn_cpu)}"
