"""bench/gpu.py, the GPU check, runs on CPU with its tiny shape as a user would start it, and
what it prints and writes is sane: every rate positive, collect / bare finite, and langloc
collect under torchrun with two gloo processes equal bit for bit to one process. Its figures
on a GPU (the 1B and 8B shapes) are measured where one is lent (docs/performance.md)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_cpu_with_the_tiny_shape_and_reports_sane_figures(tmp_path):
    out = tmp_path / "gpu.json"
    # CUDA hidden: the script must pick the tiny shape on CPU by itself.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--gloo", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout
    assert printed.startswith("CPU class "), "the machine is named first (langloc/machine.py)"
    assert "device cpu" in printed and "bfloat16, SDPA attention" in printed
    assert "equal bit for bit to one process" in printed

    results = json.loads(out.read_text())
    assert (results["device"], results["dtype"], results["attention"]) == ("cpu", "bfloat16", "sdpa")
    assert list(results["shapes"]) == ["tiny"]
    tiny = results["shapes"]["tiny"]
    assert tiny["params"] > 0
    assert [row["batch"] for row in tiny["rows"]] == [1, 4], "two batch sizes"
    for row in tiny["rows"]:
        assert row["bare"] > 0 and row["collect"] > 0
        assert math.isfinite(row["ratio"]) and math.isclose(row["ratio"], row["collect"] / row["bare"])
        assert row["peak_gib"] is None, "no GPU memory to report on CPU"
        line = next(ln for ln in printed.splitlines() if ln.startswith("tiny") and ln.split()[2] == str(row["batch"]))
        assert f"{row['ratio']:.3f}" in line, "the table prints the measured ratio"
    check = results["two_process"]
    assert check["equal"] is True and check["backend"] == "gloo" and check["tokens"] > 0
