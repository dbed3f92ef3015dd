"""Model registry and loading, presets from ``experiments/*.yaml``, and run configs as plain dicts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import UserError

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
TOY_DIR = Path(__file__).resolve().parent / "assets" / "toy"
FORK_DIR = Path(__file__).resolve().parent / "assets" / "toy-fork"

MODELS = {
    "toy": str(TOY_DIR),
    "toy-fork": str(FORK_DIR),
    "qwen3-1.7b": "Qwen/Qwen3-1.7B-Base",
    "qwen3-4b": "Qwen/Qwen3-4B-Base",
    "qwen2.5-math-7b": "Qwen/Qwen2.5-Math-7B",
}

EMBEDDED_BUILDS = {"toy": "cancel toy build --seed 0", "toy-fork": "cancel toy build --kind fork --seed 0"}
TOYS = tuple(EMBEDDED_BUILDS)  # the embedded toys: toy prompts, toy validation sets, 96-token responses


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
        if not (path / "config.json").exists():
            raise UserError(f"{path} is not a Hugging Face model folder (no config.json)")
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

    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"unknown dtype {dtype!r} (float32 | bfloat16 | float16)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device} requested but CUDA is not available")
    model_id, folder = resolve_model(name)
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device).eval()
    return Policy(model, tok, name=model_id if name not in MODELS else name, weights_hash=weights_hash(folder))


def load_preset(name: str) -> dict:
    """A preset from ``experiments/<name>.yaml`` (plain data)."""
    import yaml

    path = EXPERIMENTS / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in EXPERIMENTS.glob("*.yaml")))
        raise UserError(f"unknown preset {name!r} (known: {known})")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"preset {path} is not valid YAML ({str(e).splitlines()[0]})") from None


def check_positive(**sizes) -> None:
    """Raise a UserError naming the first size that is < 1."""
    for k, v in sizes.items():
        if v is not None and v < 1:
            raise UserError(f"{k} must be >= 1, got {v}")
