"""``cancel train --engine verl``: build (and run) verl's command for a TrainConfig.

The command is ``python -m verl.trainer.main_ppo --config-path <pkg config> --config-name cancel_grpo``
plus overrides derived from the run config (model, data, batch sizes, lr, mini-batching, RB sampler,
results store run).  Ray multi-node options pass through (``--nnodes``, ``--gpus-per-node``,
``--ray-address``).  The store run is created first; the trainer writes its probe and metrics into it,
and the launcher marks it done when verl exits 0 (so ``cancel plot fig8`` reads a verl run like a torch
run).  ``--dry-run`` prints the command and writes nothing.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from ..config import MODELS
from ..errors import UserError

CONFIG_DIR = Path(__file__).parent / "config"


def build_command(cfg, *, results_dir: str | None = None, run_id: str | None = None, nnodes: int = 1,
                  gpus_per_node: int = 8, data_dir: str = "data/verl", ray_address: str | None = None) -> list[str]:
    model = MODELS.get(cfg.model, cfg.model)
    ov = {
        "actor_rollout_ref.model.path": model,
        "data.train_files": f"{data_dir}/dapo17k.parquet" if cfg.data == "dapo17k" else cfg.data,
        "data.val_files": f"{data_dir}/validation.parquet",
        "data.train_batch_size": cfg.prompts,
        "data.max_response_length": cfg.max_new_tokens,
        "actor_rollout_ref.rollout.n": cfg.n,
        "actor_rollout_ref.rollout.temperature": cfg.temperature,
        "actor_rollout_ref.rollout.top_p": cfg.top_p,
        "actor_rollout_ref.rollout.val_kwargs.temperature": cfg.val_temperature,
        "actor_rollout_ref.rollout.val_kwargs.top_p": cfg.val_top_p,
        "actor_rollout_ref.rollout.val_kwargs.do_sample": True,
        "actor_rollout_ref.actor.ppo_mini_batch_size": cfg.minibatch_prompts,
        "actor_rollout_ref.actor.optim.lr": cfg.lr,
        "actor_rollout_ref.actor.clip_ratio_low": cfg.clip_low,
        "actor_rollout_ref.actor.clip_ratio_high": cfg.clip_high,
        "reward.custom_reward_function.path": str(Path(__file__).parent / "reward.py"),
        "reward.custom_reward_function.name": "compute_score",
        "trainer.total_training_steps": cfg.steps,
        "trainer.test_freq": cfg.val_every,
        "trainer.save_freq": cfg.checkpoint_every,
        "trainer.nnodes": nnodes,
        "trainer.n_gpus_per_node": gpus_per_node,
        "trainer.project_name": "cancel",
        "trainer.experiment_name": run_id or "dry-run",
        "cancel.mini_batching": cfg.plan,
        "cancel.probe": True,
    }
    if cfg.rb:
        ov.update({"trainer.v1.sampler.custom_sampler.path": str(Path(__file__).parent / "rb_sampler.py"),
                   "trainer.v1.sampler.custom_sampler.name": "RewardBalancedReplayBuffer",
                   "+trainer.v1.sampler.sampler_kwargs.tau": cfg.tau,
                   "+trainer.v1.sampler.sampler_kwargs.max_age": cfg.rb_max_age,
                   "+trainer.v1.sampler.sampler_kwargs.max_refills": cfg.rb_max_wait})
    if cfg.positive_only:
        raise UserError("--positive-only is available with --engine torch only")
    if results_dir and run_id:
        ov.update({"cancel.results_dir": results_dir, "cancel.run_id": run_id})
    if ray_address:
        ov["+ray_kwargs.ray_init.address"] = ray_address
    return [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={CONFIG_DIR}", "--config-name=cancel_grpo",
            *[f"{k}={_val(v)}" for k, v in ov.items()]]


def _val(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def launch(cfg, store, *, dry_run: bool = False, nnodes: int = 1, gpus_per_node: int = 8, ray_address: str | None = None,
           data_dir: str = "data/verl", extra: tuple = ()):
    """Run verl for ``cfg`` into a new store run; ``extra``: further hydra overrides (e.g. a smoke test's)."""
    cfg.validate()
    kw = dict(nnodes=nnodes, gpus_per_node=gpus_per_node, ray_address=ray_address, data_dir=data_dir)
    if dry_run:
        print(shlex.join(build_command(cfg, **kw) + list(extra)))
        return None, {}
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise UserError("--engine verl needs vLLM and GPUs (pip install 'cancel[gpu]'); use --engine torch on CPU")
    from ..config import to_dict

    with store.running("train", to_dict(cfg), model=cfg.model, seed=cfg.seed, device="cuda") as run:
        run.update(engine="verl")  # the training engine (the config's own `engine` is the sampling engine)
        cmd = build_command(cfg, results_dir=str(store.root.resolve()), run_id=run.id, **kw) + list(extra)
        (run.path / "command.txt").write_text(shlex.join(cmd) + "\n")
        proc = subprocess.run(cmd, env={**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "auto"})
        if proc.returncode != 0:
            raise UserError(f"verl exited with code {proc.returncode}; see the log above (run {run.id})")
        from ..grpo.trainer import summarize

        summary = summarize(run)
        run.finish(summary)
    return run, summary
