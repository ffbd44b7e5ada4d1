"""`scripts/integration_test.sh`, run as CI and users run it (the local-process path where no Docker engine answers)."""

import os
import re
import socket
import subprocess

from grpc_model.src.settings import PROJECT_ROOT


def test_integration_script_passes() -> None:
    with socket.socket() as probe:  # the script takes a concrete port, as users give it one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts/integration_test.sh")],
        cwd="/",  # runnable from any directory
        env={**os.environ, "PSC_MODEL_PORT": str(port), "STARTUP_SECONDS": "60"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[integration] passed" in result.stdout
    summaries = re.findall(r"^(\d+) of (\d+) test cases passed$", result.stdout, re.MULTILINE)
    assert len(summaries) == 2  # batch sizes 1 and 8
    assert all(passed == total and int(total) > 0 for passed, total in summaries)
