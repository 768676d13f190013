"""What the CPU can do fast. bf16 matmuls run natively only with AVX512-BF16 or AMX; on AVX2-only
machines PyTorch emulates them, about 6x slower than fp32."""
from __future__ import annotations

import functools
from typing import Set


@functools.lru_cache(maxsize=1)
def cpu_flags() -> Set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id (GenuineIntel, AuthenticAMD, ...), or "" where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_has_native_bf16() -> bool:
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


BF16_SLOW_WARNING = ("precision bf16 on a CPU without native bf16 instructions (no AVX512-BF16 or AMX): "
                     "PyTorch emulates bf16 there, about 6x slower than fp32; use train.precision=fp32")
