"""Where training runs: `--device auto|cpu|cuda`.

The trainer creates its tensors, networks and optimiser state with torch factory functions and never
names a device, so building and running it inside `torch.device(...)` (torch's default-device context)
puts every tensor, the policy and the critic on that device. Its random generator is the one object that
context does not cover; `on_device` re-seats it on the device with the same seed. CPU is the identity: a
CPU run is bit-for-bit the run it was before devices existed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

DEVICES = ("auto", "cpu", "cuda")


class DeviceError(ValueError):
    """The requested device cannot be used here; the message says what to pass instead."""


def resolve_device(choice: str) -> torch.device:
    """auto → CUDA when torch sees a GPU, else CPU; cuda without a GPU is refused, not silently CPU."""
    if choice not in DEVICES:
        raise DeviceError(f"unknown device {choice!r}; choose auto, cpu or cuda")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise DeviceError(
            f"--device cuda, but torch {torch.__version__} ({build}) sees no CUDA device; use --device cpu "
            "or auto, or install a CUDA build of torch on a machine with a GPU"
        )
    return torch.device("cuda")


@contextlib.contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    """Run the enclosed construction and training with `device` as torch's default device."""
    if device.type == "cpu":
        yield
        return
    with device:
        yield


def seat_generator(trainer: Any, device: torch.device) -> None:
    """Move the trainer's generator to `device` with the seed it was built with (CPU: untouched)."""
    if device.type == "cpu":
        return
    gen = getattr(trainer, "gen", None)
    if isinstance(gen, torch.Generator) and gen.device != device:
        trainer.gen = torch.Generator(device=device).manual_seed(trainer.cfg.seed)


def state_to(state: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A checkpoint (loaded on CPU) with its loose tensors on `device`; the generator state stays a CPU
    byte tensor, and modules and optimisers copy their own entries onto their parameters' device."""
    if device.type == "cpu":
        return state
    return {k: v.to(device) if isinstance(v, torch.Tensor) and k != "gen" else v for k, v in state.items()}


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPUs where bfloat16 matmuls beat float32 (elsewhere they are slower)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def sampling_dtype(precision: str) -> torch.dtype:
    if precision == "bfloat16" or (precision == "auto" and cpu_has_fast_bf16()):
        return torch.bfloat16
    return torch.float32
