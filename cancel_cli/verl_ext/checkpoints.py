"""Checkpoints of a ``--engine verl`` run, in verl's layout under the run folder:
``checkpoints/global_step_<N>/actor/huggingface`` (the launcher asks verl to save ``hf_model``, so the
folder holds full Hugging Face weights next to the sharded FSDP state).  No verl import."""

from __future__ import annotations

from pathlib import Path


def verl_checkpoints(run_path) -> list[tuple[str, int, Path]]:
    """(name, step, Hugging Face folder) for every complete verl checkpoint, oldest first."""
    out = []
    for d in Path(run_path, "checkpoints").glob("global_step_*"):
        hf = d / "actor" / "huggingface"
        if d.name.split("_")[-1].isdigit() and (hf / "config.json").exists() and any(hf.glob("*.safetensors")):
            out.append((d.name, int(d.name.split("_")[-1]), hf))
    return sorted(out, key=lambda t: t[1])
