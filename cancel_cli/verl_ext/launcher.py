"""``cancel train --engine verl``: check the machine, build verl's command for a TrainConfig, run it.

The command is ``python -m verl.trainer.main_ppo --config-path <pkg config> --config-name cancel_grpo``
plus hydra overrides.  Every ``TrainConfig`` field either reaches the command (``overrides``), reaches
the run's data files (``DATA_FIELDS``: ``data.write_run_data``), or -- when set to something verl cannot
do -- is refused with a one-line error (``refuse``); nothing is dropped silently.  The store run is
created first; the data, checkpoints (keep-last-k, Hugging Face weights included so ``cancel eval --run``
reads them) and the trainer's metrics all live in the run folder; the launcher marks the run done when
verl exits 0.  ``--dry-run`` prints the command and writes nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from ..config import MODELS
from ..errors import UserError
from ..tasks.prompts import default_template
from .data import chat_template, val_k

CONFIG_DIR = Path(__file__).parent / "config"
GPU_EXTRA = ("vllm", "ray", "transfer_queue", "cachetools", "fastapi", "uvicorn")  # import names of [gpu]
DATA_FIELDS = ("data", "seed", "val_sets", "val_prompts", "val_k")  # reach verl through the run's parquet files
OPTIMIZERS = {"adamw": "AdamW", "sgd": "SGD"}


def refuse(cfg) -> None:
    """One-line errors for settings verl cannot honour (instead of running something else)."""
    bad = {
        "positive_only": (cfg.positive_only, "--positive-only is available with --engine torch only"),
        "dp": (cfg.dp != 1, "dp emulates ranks in the torch engine; verl uses its real ranks (--nnodes x --gpus-per-node)"),
        "params": (cfg.params != "full", f"params={cfg.params!r}: verl trains all parameters"),
        "probe_proxy_every": (cfg.probe_proxy_every != 0, "--probe-proxy (Fig. 10) is available with --engine torch only"),
        "proxy_lr": (cfg.proxy_lr != 0.1 and not cfg.probe_proxy_every, "proxy_lr is only used by --probe-proxy (torch engine)"),
        "grad_clip": (cfg.grad_clip is None, "grad_clip=None: verl always clips the gradient norm; give a value"),
        "momentum": (cfg.momentum != 0 and cfg.optimizer != "sgd", "momentum applies to --optimizer sgd only"),
        "optimizer": (cfg.optimizer not in OPTIMIZERS, f"unknown optimizer {cfg.optimizer!r} (adamw | sgd)"),
        "engine": (cfg.engine == "torch", "sampling engine 'torch': verl samples with vLLM"),
        "device": (cfg.device != "cuda", f"--device {cfg.device}: verl uses every GPU it is given (choose them with "
                   "CUDA_VISIBLE_DEVICES and --gpus-per-node)"),
    }
    for _, (hit, msg) in bad.items():
        if hit:
            raise UserError(f"--engine verl: {msg}")


def check_environment() -> None:
    """Before anything starts: the [gpu] extra and CUDA, named exactly when missing."""
    missing = [m for m in GPU_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"--engine verl needs the [gpu] extra: {', '.join(missing)} not installed "
                        "(pip install 'cancel[gpu]'); use --engine torch without it")
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"--engine verl needs CUDA GPUs: torch {torch.__version__} sees none "
                        f"(torch.cuda.is_available() is False); use --engine torch")


def attention() -> str:
    """verl defaults to flash_attention_2, which nothing installs: use PyTorch's sdpa unless it is there."""
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"


def prompt_budget(model_path: str, max_new_tokens: int, default: int = 1024) -> int:
    """verl's data.max_prompt_length: 1024, or what a local model's context leaves after the response
    (vLLM refuses a max_model_len above max_position_embeddings; the toy has 256)."""
    conf = Path(model_path) / "config.json"
    if not conf.exists():
        return default
    budget = min(default, json.loads(conf.read_text()).get("max_position_embeddings", 10**9) - max_new_tokens)
    if budget < 8:
        raise UserError(f"--engine verl: {model_path} has no room for prompts after {max_new_tokens} response tokens")
    return budget


def overrides(cfg, *, run_dir: Path, nnodes: int = 1, gpus_per_node: int = 8, tp: int = 1, keep_checkpoints: int = 2,
              ray_address: str | None = None) -> dict:
    refuse(cfg)
    if tp < 1 or keep_checkpoints < 1 or nnodes < 1 or gpus_per_node < 1:
        raise UserError("--tp, --keep-checkpoints, --nnodes and --gpus-per-node must be >= 1")
    run_dir = Path(run_dir)
    val_n = max(val_k(cfg, b) for b in cfg.val_sets) if cfg.val_sets else 1
    a, r = "actor_rollout_ref.actor", "actor_rollout_ref.rollout"
    ov = {
        "actor_rollout_ref.model.path": MODELS.get(cfg.model, cfg.model),
        "actor_rollout_ref.model.custom_chat_template": chat_template(cfg.template or default_template(cfg.model)),
        "+actor_rollout_ref.model.override_config.attn_implementation": attention(),
        "data.train_files": str(run_dir / "data" / "train.parquet"),
        "data.val_files": str(run_dir / "data" / "validation.parquet"),
        "data.seed": cfg.seed,
        "data.train_batch_size": cfg.prompts,
        "data.max_response_length": cfg.max_new_tokens,
        "data.max_prompt_length": prompt_budget(MODELS.get(cfg.model, cfg.model), cfg.max_new_tokens),
        f"{r}.n": cfg.n,
        f"{r}.temperature": cfg.temperature,
        f"{r}.top_p": cfg.top_p,
        f"{r}.dtype": cfg.dtype,
        f"{r}.seed": cfg.seed,
        f"{r}.tensor_model_parallel_size": tp,
        f"{r}.val_kwargs.n": val_n,  # rows carry their own k (__rollout_n__); this is the fallback
        f"{r}.val_kwargs.temperature": cfg.val_temperature,
        f"{r}.val_kwargs.top_p": cfg.val_top_p,
        f"{r}.val_kwargs.do_sample": True,
        f"{a}.ppo_mini_batch_size": cfg.minibatch_prompts,
        f"{a}.optim.optimizer": OPTIMIZERS[cfg.optimizer],
        f"{a}.optim.lr": cfg.lr,
        f"{a}.optim.weight_decay": cfg.weight_decay,
        f"{a}.optim.clip_grad": cfg.grad_clip,
        f"{a}.clip_ratio_low": cfg.clip_low,
        f"{a}.clip_ratio_high": cfg.clip_high,
        f"{a}.checkpoint.save_contents": "[model,optimizer,extra,hf_model]",
        "reward.custom_reward_function.path": "pkg://cancel_cli.verl_ext.reward",
        "reward.custom_reward_function.name": "compute_score",
        "trainer.total_training_steps": cfg.steps,
        "trainer.test_freq": cfg.val_every,
        "trainer.save_freq": cfg.checkpoint_every,
        "trainer.max_actor_ckpt_to_keep": keep_checkpoints,
        "trainer.default_local_dir": str(run_dir / "checkpoints"),
        "trainer.resume_mode": "auto",  # --resume: continue from the newest checkpoint in the run folder
        "trainer.nnodes": nnodes,
        "trainer.n_gpus_per_node": gpus_per_node,
        "trainer.device": cfg.device,
        "trainer.project_name": "cancel",
        "trainer.experiment_name": run_dir.name,
        "cancel.mini_batching": cfg.plan,
        "cancel.probe": True,
        "cancel.probe_tokens": cfg.save_tokens,
        "cancel.seed": cfg.seed,
        "cancel.run_dir": str(run_dir),
    }
    if cfg.optimizer == "sgd":
        ov[f"{a}.optim.override_optimizer_config"] = f"{{momentum:{cfg.momentum}}}"
    if cfg.rb:
        ov.update({"trainer.v1.sampler.custom_sampler.path": "pkg://cancel_cli.verl_ext.rb_sampler",
                   "trainer.v1.sampler.custom_sampler.name": "RewardBalancedReplayBuffer",
                   "+trainer.v1.sampler.sampler_kwargs.tau": cfg.tau,
                   "+trainer.v1.sampler.sampler_kwargs.max_age": cfg.rb_max_age,
                   "+trainer.v1.sampler.sampler_kwargs.max_refills": cfg.rb_max_wait})
    if ray_address:
        ov["+ray_kwargs.ray_init.address"] = ray_address
    return ov


def build_command(cfg, *, run_dir: Path, **kw) -> list[str]:
    ov = overrides(cfg, run_dir=run_dir, **kw)
    return [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={CONFIG_DIR}", "--config-name=cancel_grpo",
            *[f"{k}={_val(v)}" for k, v in ov.items()]]


def _val(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str) and ("{{" in v or "\n" in v or " " in v):
        return f"'{v}'"  # a quoted hydra string (chat templates contain no single quote)
    return str(v)


def launch(cfg, store, *, dry_run: bool = False, resume: str | None = None, **kw):
    """``resume`` reopens an unfinished verl run: same folder, and verl's ``resume_mode=auto`` continues
    from the newest checkpoint under it (metrics parts are keyed by step, so re-done steps overwrite)."""
    cfg.validate()
    if dry_run:
        print(shlex.join(build_command(cfg, run_dir=store.root / "train" / "DRY-RUN", **kw)))
        return None, {}
    overrides(cfg, run_dir=store.root, **kw)  # refusals first
    check_environment()
    from ..config import to_dict
    from ..grpo.trainer import summarize
    from .data import write_run_data

    with store.running("train", {**to_dict(cfg), "engine": "verl"}, resume=resume, model=cfg.model, seed=cfg.seed,
                       device="cuda") as run:
        write_run_data(cfg, run.path / "data")
        cmd = build_command(cfg, run_dir=run.path.resolve(), **kw)
        (run.path / "command.txt").write_text(shlex.join(cmd) + "\n")
        env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "auto"}
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            raise UserError(f"verl exited with code {proc.returncode}; see the log above (run {run.id})")
        summary = summarize(run)
        run.finish(summary)
    return run, summary


def default_preset(model: str) -> str:
    """``--engine verl`` without ``--preset``: the model's paper preset; the torch defaults are the toy's."""
    from ..config import load_preset

    try:
        load_preset(f"train_{model}")
    except UserError:
        raise UserError(f"--engine verl with --model {model}: give --preset (e.g. train_qwen3-4b); the flag defaults "
                        "are the toy's (lr 2e-4, 96-token responses)") from None
    return f"train_{model}"


def config_fields(cfg_cls) -> list[str]:
    return [f.name for f in fields(cfg_cls)]
