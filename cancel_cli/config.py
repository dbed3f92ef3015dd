"""Model registry and loading, presets from ``experiments/*.yaml``, and run configs as plain dicts.

One config order, as in nanoGPT: config dataclass defaults < a preset (``experiments/<name>.yaml``, a YAML
file, or a finished run's ``run.json``) < the flags the user typed.  ``--resume`` rebuilds the config from
the run's ``run.json`` and refuses a typed flag that differs from it (except the ones a command declares
safe, e.g. ``--steps`` to extend a training run).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, fields
from pathlib import Path

from .errors import UserError

ROOT = Path(__file__).resolve().parent.parent
# the wheel maps the top-level experiments/ folder to cancel_cli/experiments (pyproject package-dir);
# a source checkout reads it in place
EXPERIMENTS = next((d for d in (Path(__file__).resolve().parent / "experiments", ROOT / "experiments") if d.is_dir()),
                   ROOT / "experiments")
TOY_DIR = Path(__file__).resolve().parent / "assets" / "toy"  # the default toy: solution routes (tasks/fork.py)
PLAIN_DIR = Path(__file__).resolve().parent / "assets" / "toy-plain"  # column addition only

MODELS = {
    "toy": str(TOY_DIR),
    "toy-plain": str(PLAIN_DIR),
    "qwen3-1.7b": "Qwen/Qwen3-1.7B-Base",
    "qwen3-4b": "Qwen/Qwen3-4B-Base",
    "qwen2.5-math-7b": "Qwen/Qwen2.5-Math-7B",
}

EMBEDDED_BUILDS = {"toy": "cancel toy build --seed 0", "toy-plain": "cancel toy build --kind plain --seed 0"}
from .tasks import TOYS  # noqa: E402  (the embedded toys; tasks is the lowest layer that needs the list)

assert set(TOYS) == set(EMBEDDED_BUILDS)


def resolve_model(name: str) -> tuple[str, Path]:
    """(model id, local folder) for a registry name, a local folder, or an HF id found in the local cache."""
    if name in EMBEDDED_BUILDS and not (Path(MODELS[name]) / "config.json").exists():
        raise UserError(f"model {name} is not built in this checkout: run `{EMBEDDED_BUILDS[name]}`")
    if name in MODELS:
        target = MODELS[name]
    else:
        target = name
    path = Path(target).expanduser()
    if path.is_dir():
        check_model_folder(path)
        return target, path
    looks_like_path = target.startswith((".", "/", "~")) or os.sep in target and target.count("/") != 1
    if looks_like_path:
        raise UserError(f"model folder {target} does not exist")
    if "/" not in target:
        raise UserError(f"unknown model {name!r}: use one of {', '.join(MODELS)}, an HF id (org/name) or a local folder")
    try:  # offline first: the local HF cache
        from huggingface_hub import snapshot_download

        local = snapshot_download(target, local_files_only=True, allow_patterns=["*.json", "*.safetensors", "*.txt",
                                                                                  "*.model", "*.tiktoken"])
        return target, Path(local)
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("CANCEL_OFFLINE") == "1":
        raise UserError(f"weights for {target} are not in the local cache; get them with "
                        f"`huggingface-cli download {target}` or pass a local folder")
    try:
        from huggingface_hub import snapshot_download

        return target, Path(snapshot_download(target))
    except Exception as e:
        raise UserError(f"weights for {target} could not be found locally or downloaded ({type(e).__name__}); "
                        f"get them with `huggingface-cli download {target}` or pass a local folder") from None


def check_model_folder(path: Path) -> None:
    """A local model folder has a config.json naming its model type, weights and a tokenizer."""
    import json

    cfg = path / "config.json"
    if not cfg.exists():
        raise UserError(f"{path} is not a Hugging Face model folder (no config.json)")
    try:
        meta = json.loads(cfg.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"model folder {path}: config.json is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not meta.get("model_type"):
        raise UserError(f"model folder {path}: config.json has no model_type (not a Hugging Face model config)")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise UserError(f"model folder {path} has no weights (*.safetensors or *.bin)")
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")):
        raise UserError(f"model folder {path} has no tokenizer files")


def weights_hash(folder: Path) -> str:
    """Content hash of the weight files: full sha256 up to 64 MiB per file; for larger files, sha256 of
    size + first and last 16 MiB (hashing 15 GB of a 7B checkpoint per run would cost minutes)."""
    h = hashlib.sha256()
    files = sorted(list(folder.glob("*.safetensors")) + list(folder.glob("*.bin")))
    for f in files:
        size = f.stat().st_size
        h.update(f.name.encode() + str(size).encode())
        with open(f, "rb") as fh:
            if size <= 64 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(16 << 20))
                fh.seek(-(16 << 20), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()[:16]


def load_policy(name: str = "toy", device: str = "cpu", dtype: str = "float32"):
    """Load a registry name / HF id / local folder as a Policy (eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would break one-line errors and --json output

    from .policy import Policy

    device, dtype = resolve_device(device, dtype)
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"unknown dtype {dtype!r} (float32 | bfloat16 | float16)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device} requested but CUDA is not available")
    model_id, folder = resolve_model(name)
    try:
        tok = AutoTokenizer.from_pretrained(folder)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device).eval()
    except (OSError, ValueError, KeyError, TypeError) as e:  # a broken folder: one line, not a loader traceback
        raise UserError(f"cannot load model {name} from {folder} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return Policy(model, tok, name=model_id if name not in MODELS else name, weights_hash=weights_hash(folder))


COMMAND_CONFIGS = {  # command -> its config dataclass (module:class, imported on use: `cancel --help` stays light)
    "train": "grpo.trainer:TrainConfig",
    "flip": "analysis.flip_run:FlipConfig",
    "positive-only": "analysis.positive_only:PositiveOnlyConfig",
    "coupling": "analysis.coupling:CouplingConfig",
    "mask-effect": "analysis.masking:MaskConfig",
    "mc-value": "analysis.value:ValueConfig",
    "entropy-gap": "analysis.entropy_gap:EntropyGapConfig",
    "budget-sweep": "analysis.budget:BudgetConfig",
    "eval": "analysis.evaluate:EvalConfig",
    "reproduce": "reproduce:ReproduceConfig",
}


def command_config(command: str):
    import importlib

    module, cls = COMMAND_CONFIGS[command].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def resolve_device(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """``auto`` device: cuda when available, else cpu; ``auto`` dtype: float32 on cpu, bfloat16 on cuda."""
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    return device, dtype


def preset_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))


def load_preset(name: str, command: str | None = None) -> dict:
    """A preset as plain data: a name in ``experiments/`` (``train_toy``), a YAML file, or a run's
    ``run.json`` (its resolved ``config``; ``command`` must match the run's command)."""
    import yaml

    path = Path(name).expanduser()
    if not (path.suffix in (".yaml", ".yml", ".json") and path.is_file()):
        path = EXPERIMENTS / f"{name}.yaml"
        if not path.exists():
            raise UserError(f"unknown preset {name!r} (a file, a run.json, or one of: {', '.join(preset_names())})")
    try:
        data = (json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())) or {}
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise UserError(f"preset {path} is not readable ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"preset {path} is not a mapping of config fields")
    if "config" in data and "command" in data:  # a run.json: rerun its resolved config
        if command and data["command"] != command:
            raise UserError(f"{path} is a {data['command']} run, not {command}")
        data = data["config"] or {}
    data.pop("description", None)
    return data


def from_dict(cls, d: dict, source: str = ""):
    """A config dataclass from plain data; an unknown key is a one-line error naming it (and its source)."""
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        where = f" in {source}" if source else ""
        raise UserError(f"unknown {cls.__name__} option(s){where}: {', '.join(sorted(unknown))}")
    return cls(**d)


def to_dict(cfg) -> dict:
    return asdict(cfg)


EXTENDABLE = ("steps",)  # fields a resumed run may change: more training steps continue the same run


def config_hash(config: dict) -> str:
    """Short content hash of a resolved config (stored in run.json and on every resumable table part);
    the EXTENDABLE fields are left out, so extending a training run keeps its parts valid."""
    kept = {k: v for k, v in config.items() if k not in EXTENDABLE}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_config(cls, *, typed: dict, preset: str | None = None, saved: dict | None = None, run_id: str = "",
                   command: str | None = None, resumable: tuple = ()):
    """dataclass defaults < preset < typed flags; with ``saved`` (a resumed run's config), the saved config
    is used as is and a typed flag that differs from it is refused unless it is in ``resumable``."""
    if saved is not None:
        if preset:
            raise UserError(f"--preset with --resume: a resumed run keeps the config saved in run {run_id}")
        for k, v in typed.items():
            if k in saved and saved[k] != v and k not in resumable:
                flag = "--" + k.replace("_", "-")
                raise UserError(f"{flag} {v} differs from run {run_id}'s saved config ({saved[k]}); "
                                f"a resumed run keeps its config")
        return from_dict(cls, {**saved, **{k: v for k, v in typed.items() if k in resumable}}, f"run {run_id}")
    base = load_preset(preset, command) if preset else {}
    return from_dict(cls, {**base, **typed}, f"preset {preset}" if preset else "")


def check_positive(**sizes) -> None:
    """Raise a UserError naming the first size that is < 1."""
    for k, v in sizes.items():
        if v is not None and v < 1:
            raise UserError(f"{k} must be >= 1, got {v}")
