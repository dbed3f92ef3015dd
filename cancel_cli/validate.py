"""Bad input is refused before any work and before a run folder exists: one line, exit 2.

``flags(locals())`` at the top of a command checks every parameter it knows by name (a rule per name
below; unknown names are skipped), using the command's own flag spelling in the message.  Model folders
and data files are checked by their loaders (``config.resolve_model``, ``tasks.data``), called here
early so a broken file never gets as far as a run folder.
"""

from __future__ import annotations

import math
import re

from .errors import UserError

SEED_MAX = 2**32 - 1  # numpy, torch and the seed arithmetic of plans (seed * 100003 + step) all accept it
OPTIMIZERS = ("sgd", "adamw")
ENGINES = {"eval": ("torch", "vllm", "auto"), "train": ("torch", "verl")}
DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def context():
    """The running command's click context, or None (typer >= 0.2x vendors its own click)."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context
    return get_current_context(silent=True)


def command() -> str:
    """The running subcommand's name (``mc-value``), or "" outside the CLI."""
    ctx = context()
    return ctx.info_name if ctx is not None else ""


def _flag(name: str) -> str:
    """The option as the user typed it (``--top-p``), from the running command when there is one."""
    ctx = context()
    if ctx is not None:
        for p in ctx.command.params:
            if p.name == name and getattr(p, "opts", None):
                return max(p.opts, key=len)
    return "--" + name.replace("_", "-")


def _number(name: str, v, lo=None, hi=None, lo_open=False, hi_open=False) -> None:
    if v is None:
        return
    ok = isinstance(v, (int, float)) and not (isinstance(v, float) and not math.isfinite(v))
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        if lo is not None and hi is not None:
            rng = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        elif lo is not None:
            rng = f"{'>' if lo_open else '>='} {lo}"
        else:
            rng = f"{'<' if hi_open else '<='} {hi}"
        raise UserError(f"{_flag(name)} must be {rng}, got {v}")


def seed(v) -> None:
    _number("seed", v, 0, SEED_MAX)


def device(v) -> None:
    if v is None:
        return
    if not DEVICE.match(str(v)):
        raise UserError(f"unknown --device {v!r} (cpu | cuda | cuda:N | auto)")
    if v.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {v} requested but CUDA is not available")
        idx = int(v.split(":")[1]) if ":" in v else 0
        if idx >= torch.cuda.device_count():
            raise UserError(f"--device {v}: only {torch.cuda.device_count()} CUDA device(s) visible")


def engine(v, for_command: str | None = None) -> None:
    allowed = ENGINES.get(for_command or command(), ("torch", "vllm", "auto"))
    if v not in allowed:
        raise UserError(f"unknown --engine {v!r} ({' | '.join(allowed)})")
    if v == "vllm":
        from .sampling import _vllm_available

        if not _vllm_available():
            raise UserError("--engine vllm needs CUDA and the vllm package (pip install -e '.[gpu]')")


def model(v) -> None:
    """Local folders (and the registry's toy) are checked now; hub ids are resolved when loaded."""
    from pathlib import Path

    from .config import MODELS, resolve_model

    if v is None:
        return
    for name in v if isinstance(v, (list, tuple)) else [v]:
        target = MODELS.get(name, name)
        if Path(target).expanduser().exists() or target.startswith((".", "/", "~")):
            resolve_model(name)


def data(v) -> None:
    """``toy`` | ``dapo17k`` | a JSONL/parquet file: loaded now, so a malformed file fails before any work."""
    if v in (None, "toy"):
        return
    from .tasks.data import load_dapo

    if not load_dapo(path=None if v == "dapo17k" else v):
        raise UserError(f"--data {v}: no problems in it")


def resume(v) -> None:
    """``--resume ID``: the run exists, is this command's, is not done and no live process holds it."""
    if v:
        from .store import Store

        ctx = context()
        root = ctx.find_root().params.get("results") if ctx is not None else None
        Store(root).resumable(v, command())


POSITIVE = ("prompts", "n", "max_new_tokens", "m", "M", "bootstrap", "per_cell", "repeat", "candidates", "mask_size", "pairs",
            "exact_tokens", "full_candidates", "steps", "val_every", "minibatch_prompts", "boot", "limit", "k",
            "nnodes", "gpus_per_node", "workers")
RULES = {
    "temperature": lambda v: _number("temperature", v, 0),
    "top_p": lambda v: _number("top_p", v, 0, 1, lo_open=True),
    "lr": lambda v: _number("lr", v, 0, lo_open=True),
    "train_lr": lambda v: _number("train_lr", v, 0, lo_open=True),
    "tau": lambda v: _number("tau", v, 0, 0.5),
    "probe_proxy": lambda v: _number("probe_proxy", v, 0),
    "optimizer": lambda v: v is None or v in OPTIMIZERS or _raise(f"unknown --optimizer {v!r} ({' | '.join(OPTIMIZERS)})"),
    "seed": seed,
    "device": device,
    "engine": engine,
    "model": model,
    "data": data,
    "resume": resume,
    **{k: (lambda name: lambda v: _number(name, v, 1))(k) for k in POSITIVE},
}
LAST = ["model", "data"]  # file reads after the cheap checks


def _raise(msg: str):
    raise UserError(msg)


def flags(params: dict) -> None:
    """Check every known parameter of a command (pass ``locals()`` as the command body's first line)."""
    names = [k for k in params if k in RULES and params[k] is not None]  # None: not typed (preset/default)
    for k in sorted(names, key=lambda k: (k in LAST, LAST.index(k) if k in LAST else 0)):
        RULES[k](params[k])


def global_options(seed_value, device_value) -> None:
    seed(seed_value)
    device(device_value)
