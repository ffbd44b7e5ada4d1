"""The digits server answers a client that shares no code with the framework (outside_client.py)."""

import json
import subprocess
import sys
from pathlib import Path

from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.tests.conftest import ServerThread, loopback_settings

HERE = Path(__file__).resolve().parent.parent
BUNDLES = HERE / "asset_bundle"


def test_every_case_passes_through_a_client_generated_from_the_proto(tmp_path: Path) -> None:
    cases = load_test_cases(load_bundle(BUNDLES))
    server = ServerThread(loopback_settings(model_class="digits_model.model", asset_bundle_dir=BUNDLES))
    try:
        assert server.client.status().status_code == 200  # loads the model
        for flags in sorted({(case.explain, case.detect_drift) for case in cases}):
            group = [case for case in cases if (case.explain, case.detect_drift) == flags]
            images = []
            for case in group:
                images.append(tmp_path / f"{case.name}.png")
                images[-1].write_bytes(case.inputs["image.png"])
            command = [
                sys.executable,
                str(HERE / "outside_client.py"),
                f"127.0.0.1:{server.running.port}",
                *map(str, images),
            ]
            command += ["--explain"] * flags[0] + ["--detect-drift"] * flags[1]
            answer = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
            lines = [json.loads(line) for line in answer.stdout.splitlines()]
            assert len(lines) == len(group)
            for case, line in zip(group, lines, strict=True):
                assert line["success"], case.name
                output = {"results.json": json.dumps(line["results.json"]).encode()}
                assert case.differences(output) == [], case.name
    finally:
        server.stop()
