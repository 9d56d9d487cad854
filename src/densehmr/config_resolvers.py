"""OmegaConf resolvers the configs use; registered once when `densehmr.runs` is imported.

`${cpu_precision:}`: "bf16-mixed" where the CPU computes bfloat16 natively (AVX512-BF16 or AMX), which
halves a ResNet-18 training step on such a CPU (results/bench.md); "32-true" elsewhere, where bfloat16
would be emulated and slower.
"""

from __future__ import annotations

import torch
from omegaconf import OmegaConf


def native_cpu_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic in hardware (torch's own capability probes)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def cpu_precision() -> str:
    return "bf16-mixed" if native_cpu_bf16() else "32-true"


def register() -> None:
    if not OmegaConf.has_resolver("cpu_precision"):
        OmegaConf.register_new_resolver("cpu_precision", cpu_precision)
