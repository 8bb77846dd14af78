"""What machine a figure was measured on: CPU model, the instruction sets that decide CPU speed,
torch's kernel level, and the accelerator.

Figures hold only for their CPU class: with AVX512-BF16 or AMX a CPU multiplies bfloat16
natively (``--dtype fast`` picks it, 2.5-3x float32); with AVX2 only, bfloat16 is emulated and
float32 is faster. Every bench script prints :func:`describe` next to its figures.
"""

from __future__ import annotations

import platform
from pathlib import Path

# The flags (as /proc/cpuinfo names them) that decide which kernels run.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
            elif key in ("flags", "Features"):
                flags = set(value.split())
            if model and flags:
                break
    except OSError:
        pass
    return model, flags


def cpu_class() -> str:
    """``AMX-BF16`` (AVX-512 with AMX tiles), ``AVX-512-BF16`` (native bfloat16 vector
    instructions), ``AVX-512``, ``AVX2`` or ``other``, as torch's kernels will use it
    (``ATEN_CPU_CAPABILITY`` can lower it). AMX is its own class: it multiplies bfloat16
    matrices 3.5-4x faster than AVX512-BF16 alone (docs/performance.md)."""
    import torch

    _, flags = _cpuinfo()
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        if "amx_bf16" in flags:
            return "AMX-BF16"
        return "AVX-512-BF16" if "avx512_bf16" in flags else "AVX-512"
    return "AVX2" if capability == "AVX2" else "other"


def describe() -> dict:
    """CPU model, class, flags, torch's CPU capability, thread count, torch and transformers
    versions, and the GPU if one is used."""
    import torch
    import transformers

    model, flags = _cpuinfo()
    info = {
        "cpu": model,
        "cpu_class": cpu_class(),
        "cpu_flags": {f: f in flags for f in FLAGS},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def summary() -> str:
    """One line for a bench script's header."""
    d = describe()
    flags = " ".join(f"{f}={'yes' if on else 'no'}" for f, on in d["cpu_flags"].items())
    gpu = f", GPU {d['gpu']}" if "gpu" in d else ""
    return (f"CPU class {d['cpu_class']}: {d['cpu']} ({flags}; torch capability {d['torch_cpu_capability']}, "
            f"{d['threads']} threads{gpu}); torch {d['torch']}, transformers {d['transformers']}")
