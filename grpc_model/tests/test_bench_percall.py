"""The per-call benchmark's report (benchmarks/percall.py): ratios against the bare servicers, targets judged."""

from benchmarks.percall import markdown


def _point(rate: float, cpu: float, p99: float = 10.0) -> dict[str, float]:
    return {"calls_per_s": rate, "cpu_us_per_call": cpu, "p50_ms": 5.0, "p99_ms": p99, "errors": 0}


def test_the_report_judges_each_protocol_against_its_own_bare_servicer() -> None:
    runs = {
        "bare ModzyModel": [_point(1000, 100), _point(1000, 100)],
        "bare V2 gRPC": [_point(1000, 200), _point(1000, 200)],
        "engine ModzyModel": [_point(900, 120), _point(700, 140)],  # 1.3x the CPU at the median, 0.8x the calls/s
        "engine V2 gRPC": [_point(800, 300), _point(800, 300)],  # 1.5x its own bare: over 1.4x
        "device": [_point(1560, 500, p99=41.0), _point(1560, 500, p99=41.0)],
    }
    medians = {name: values[0] for name, values in runs.items()}  # the table's rows; the ratios come from `runs`

    lines = markdown({"rounds": 2, "seconds": 1.0, "medians": medians, "runs": runs})

    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}
    assert rows["ModzyModel echo c=32: server CPU/call <= 1.3x bare"].endswith("| 1.300 | 1.300 | yes |")
    assert rows["ModzyModel echo c=32: calls/s >= 0.8x bare"].endswith("| 0.800 | 0.800 | yes |")
    assert rows["V2 gRPC echo c=32: server CPU/call <= 1.4x bare"].endswith("| 1.500 | 1.500 | **no** |")
    assert rows["device c=64: items/s >= 1,550 (97.5% of the ceiling)"].endswith("| yes |")
    assert rows["device c=64: p99 <= 40 ms"].endswith("| **no** |")
    assert not any("baseline" in line for line in lines)  # no baseline rows unless one was measured
