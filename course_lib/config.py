"""One configuration object for every notebook, test and benchmark, read from environment variables.

| variable          | meaning                                              | default   |
|-------------------|------------------------------------------------------|-----------|
| ``COURSE_MODEL``  | ``tiny-sd``, a hub id (``sd15``, ``sd21`` aliases; ``id@revision`` pins one) or a local folder | ``tiny-sd`` |
| ``COURSE_DEVICE`` | ``cuda``, ``mps`` or ``cpu``                         | best available |
| ``COURSE_DTYPE``  | ``float16``, ``bfloat16`` or ``float32``             | fp16 on GPUs, fp32 on CPU |
| ``COURSE_SMOKE``  | ``1`` = CI setting: fewer steps and cases            | ``0``     |
| ``COURSE_SEED``   | base seed                                            | ``0``     |

Notebooks size their work with :meth:`CourseConfig.pick` (``cfg.pick(full=50, smoke=10)``) rather than
skipping it, so CI runs every cell with less work and a learner runs the full setting.
"""
from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass, field

import torch


def best_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def default_dtype(device: str | torch.device) -> torch.dtype:
    return torch.float32 if torch.device(device).type == "cpu" else torch.float16


# Where training runs and cached models live (``COURSE_RUNS``; default ``runs/`` beside the package).
RUNS = Path(os.environ.get("COURSE_RUNS", Path(__file__).resolve().parents[1] / "runs"))

_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(_DTYPES)}") from None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _truthy(v: str | None, name: str = "value") -> bool:
    """An on/off environment variable; anything else is refused (``maybe`` is neither)."""
    w = (v or "").strip().lower()
    if w not in _TRUE + _FALSE:
        raise ValueError(f"{name}={v!r} is neither on nor off: set it to 1 (on) or 0 (off)")
    return w in _TRUE


def _seed(v: str | None) -> int:
    try:
        return int((v or "0").strip())
    except ValueError:
        raise ValueError(f"COURSE_SEED={v!r} is not a whole number: set it to a seed such as 0 or 1234") from None


def _device(v: str | None) -> str:
    """``cuda``, ``cuda:N``, ``mps`` or ``cpu``; a device this machine lacks is refused with what it has."""
    if not v:
        return best_device()
    d = v.strip().lower()
    kind = d.split(":")[0]
    if kind not in ("cuda", "mps", "cpu") or (kind != "cuda" and ":" in d):
        raise ValueError(f"COURSE_DEVICE={v!r}: the course runs on cuda (or cuda:N), mps or cpu")
    if kind == "cuda" and not torch.cuda.is_available() or kind == "mps" and best_device() != "mps":
        raise ValueError(f"COURSE_DEVICE={v!r}, but this machine has no {kind} device: "
                         f"unset it to use the best one here ({best_device()})")
    return d


@dataclass
class CourseConfig:
    model: str = "tiny-sd"
    device: str = field(default_factory=best_device)
    dtype: torch.dtype | None = None
    smoke: bool = False
    seed: int = 0

    def __post_init__(self):
        self.dtype = parse_dtype(self.dtype) or default_dtype(self.device)

    @classmethod
    def from_env(cls) -> "CourseConfig":
        return cls(model=os.environ.get("COURSE_MODEL", "tiny-sd"),
                   device=_device(os.environ.get("COURSE_DEVICE")),
                   dtype=parse_dtype(os.environ.get("COURSE_DTYPE")),
                   smoke=_truthy(os.environ.get("COURSE_SMOKE"), "COURSE_SMOKE"),
                   seed=_seed(os.environ.get("COURSE_SEED")))

    def pick(self, full, smoke):
        """``smoke`` under the CI setting, ``full`` otherwise."""
        return smoke if self.smoke else full

    @property
    def steps(self) -> int:
        """DDIM steps for sampling: 50 as in every paper, 20 in the CI setting."""
        return self.pick(50, 20)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator (reproducible across devices) seeded with ``seed + offset``."""
        return torch.Generator("cpu").manual_seed(self.seed + offset)

    def describe(self) -> str:
        return (f"model={self.model} device={self.device} dtype={str(self.dtype).replace('torch.', '')} "
                f"setting={'smoke (CI)' if self.smoke else 'full'} steps={self.steps}")


def get_config() -> CourseConfig:
    return CourseConfig.from_env()


def keep_global_rng():
    """A ``with`` block after which torch's global random generators (CPU and CUDA) are as they were
    before it: library code that must draw from them (a layer's random initialisation before its
    weights are loaded, peft's adapter initialisation) runs inside one, so that a learner's
    ``torch.manual_seed`` is never moved by a library call."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return torch.random.fork_rng(devices=devices)
