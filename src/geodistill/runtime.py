"""Run-time facts decided once and passed down: device, seeds, versions."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed. Built once by the CLI or the caller."""

    device: torch.device
    amp: bool = False  # bfloat16 autocast (CUDA, or CPUs with bf16 instructions)
    channels_last: bool = False  # CUDA only
    compile: bool = False  # torch.compile the student / teacher forward passes of student training

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last and self.cuda:
            model = model.to(memory_format=torch.channels_last)
        return model

    def compiled(self, model: torch.nn.Module) -> torch.nn.Module:
        """``torch.compile(model)`` when ``compile`` is set (parameters stay shared with ``model``)."""
        return torch.compile(model) if self.compile else model


def make_runtime(
    device: str = "auto", amp: bool = False, channels_last: bool = False, compile: bool = False
) -> Runtime:
    if device == "auto":
        local = int(os.environ.get("LOCAL_RANK", 0))
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from .files import GeodistillError

        raise GeodistillError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "cuda":
        if dev.index is None:  # "cuda": this process's GPU (LOCAL_RANK under torchrun)
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    return Runtime(dev, amp=amp, channels_last=channels_last, compile=compile)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def versions() -> dict[str, str]:
    import torchvision

    from . import __version__

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "geodistill": __version__,
        "platform": platform.platform(),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def machine() -> str:
    """CPU model, core count and GPUs of this machine, for benchmark records."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return f"{cpu}, {os.cpu_count()} cores, " + (", ".join(gpus) if gpus else "no GPU")
