"""``cancel train --engine verl``: what the launcher builds, refuses and checks (no Ray, no GPU)."""

import shlex
import sys
import tomllib
from dataclasses import fields, replace
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("verl")

from cancel_cli.cli import app  # noqa: E402
from cancel_cli.errors import UserError  # noqa: E402
from cancel_cli.grpo.trainer import TrainConfig  # noqa: E402
from cancel_cli.verl_ext import launcher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "experiments").glob("train_*.yaml"))


def dry_run(tmp_path, *args):
    res = CliRunner().invoke(app, ["--results", str(tmp_path), "train", "--engine", "verl", *args, "--dry-run"])
    assert res.exit_code == 0, res.output
    cmd = shlex.split(res.output.strip().splitlines()[-1])
    assert cmd[1:3] == ["-m", "verl.trainer.main_ppo"]
    return [c for c in cmd[3:] if not c.startswith("--config")]


def compose(overrides):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    with initialize_config_dir(config_dir=str(launcher.CONFIG_DIR), version_base=None):
        cfg = hcompose("cancel_grpo", overrides=overrides)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    return cfg


@pytest.mark.parametrize("preset", PRESETS)
def test_each_presets_command_composes_and_passes_verls_checks(tmp_path, preset):
    from cancel_cli.config import load_preset

    p = load_preset(preset)
    model = [] if "model" in p else ["--model", "qwen3-4b"]  # train_paper: Table 3 settings for any paper model
    cfg = compose(dry_run(tmp_path, "--preset", preset, *model, "--qb", "--rb"))
    a, r = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert a.optim.lr == p["lr"] and a.optim.weight_decay == p.get("weight_decay", 0.0)  # not verl's 0.01 default
    assert cfg.data.max_response_length == p["max_new_tokens"] and cfg.data.train_batch_size == p["prompts"]
    assert a.ppo_mini_batch_size == p["minibatch_prompts"] and r.n == p["n"] and a.optim.clip_grad == p["grad_clip"]
    assert (a.clip_ratio_low, a.clip_ratio_high, a.loss_agg_mode) == (0.2, 0.28, "token-mean")
    assert not a.shuffle and a.ppo_epochs == 1  # the layouts fix mini-batch membership
    assert cfg.cancel.mini_batching == "query-preserved" and cfg.trainer.v1.sampler.sampler_kwargs.tau == p["tau"]
    assert list(cfg.trainer.logger) == ["console"]  # item 5: no wandb (raises without an API key)
    run_dir = Path(cfg.cancel.run_dir)
    assert Path(cfg.trainer.default_local_dir) == run_dir / "checkpoints" and cfg.trainer.max_actor_ckpt_to_keep == 2
    assert "hf_model" in a.checkpoint.save_contents  # `cancel eval --run` needs Hugging Face weights
    assert cfg.data.train_files == str(run_dir / "data" / "train.parquet")
    assert r.tensor_model_parallel_size == 1 and r.val_kwargs.do_sample
    paper = "aime24" in p.get("val_sets", [])
    assert r.val_kwargs.n == (32 if paper else 1)  # avg@32 on AIME/AMC, as the torch path
    assert cfg.trainer.test_freq == p["val_every"] and cfg.trainer.save_freq == p["checkpoint_every"]
    if p.get("model") == "toy":  # vLLM refuses max_model_len above the toy's 256 positions
        assert cfg.data.max_prompt_length + cfg.data.max_response_length <= 256


def test_launcher_options_reach_the_command(tmp_path):
    cfg = compose(dry_run(tmp_path, "--preset", "train_qwen3-4b", "--tp", "2", "--keep-checkpoints", "3",
                          "--gpus-per-node", "4", "--optimizer", "sgd", "--sign-partition"))
    assert cfg.actor_rollout_ref.rollout.tensor_model_parallel_size == 2 and cfg.trainer.max_actor_ckpt_to_keep == 3
    assert cfg.actor_rollout_ref.actor.optim.optimizer == "SGD" and cfg.trainer.n_gpus_per_node == 4
    assert cfg.cancel.mini_batching == "sign-partitioned"


def test_attention_is_sdpa_unless_flash_attn_is_installed(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "flash_attn" else real(n, *a))
    assert compose(dry_run(tmp_path))["actor_rollout_ref"]["model"]["override_config"]["attn_implementation"] == "sdpa"
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "flash_attn" else real(n, *a))
    assert launcher.attention() == "flash_attention_2"


def test_sampler_and_reward_load_through_verls_own_loader(tmp_path):
    """verl imports custom code with load_extern_object; a file path loses the package (relative imports fail)."""
    from verl.utils.import_utils import load_extern_object

    from cancel_cli.verl_ext.rb_sampler import RewardBalancedReplayBuffer
    from cancel_cli.verl_ext.reward import compute_score

    ov = launcher.overrides(TrainConfig(rb=True, device="cuda", dtype="bfloat16"), run_dir=tmp_path)
    sampler = load_extern_object(ov["trainer.v1.sampler.custom_sampler.path"], ov["trainer.v1.sampler.custom_sampler.name"])
    assert sampler is RewardBalancedReplayBuffer
    fn = load_extern_object(ov["reward.custom_reward_function.path"], ov["reward.custom_reward_function.name"])
    assert fn is compute_score and fn("toy", "so \\boxed{12}", "12")["score"] == 1.0


def _changed(name, value, tmp_path):
    special = {"model": "qwen3-4b", "data": str(tmp_path / "mine.jsonl"), "template": "plain", "device": "cpu",
               "dtype": "float16", "engine": "torch", "plan": "query-preserved", "optimizer": "adamw", "params": "head",
               "val_sets": ["toy-2digit"], "grad_clip": 0.5, "val_k": 4, "tau": 0.4, "val_prompts": 16}
    if name in special:
        return special[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 + 0.01
    raise AssertionError(f"add a changed value for TrainConfig.{name}")


def _data(cfg, folder):
    from cancel_cli.verl_ext.data import write_run_data

    return [pd.read_parquet(p).to_json() for p in write_run_data(cfg, folder)]


def test_every_trainconfig_setting_reaches_verl_or_is_refused(tmp_path):
    """Item 10: no setting is dropped silently -- each one changes the command, or the run's data files,
    or (for what verl cannot do) raises a one-line error naming --engine verl."""
    (tmp_path / "mine.jsonl").write_text('{"id": "a", "problem": "Add 1+2.", "answer": "3"}\n')
    base = TrainConfig(rb=True, optimizer="sgd", device="cuda", dtype="bfloat16")
    ov0 = launcher.overrides(base, run_dir=tmp_path / "run")
    data0 = None
    outcome = {}
    for f in fields(TrainConfig):
        cfg = replace(base, **{f.name: _changed(f.name, getattr(base, f.name), tmp_path)})
        try:
            ov = launcher.overrides(cfg, run_dir=tmp_path / "run")
        except UserError as e:
            assert "\n" not in str(e) and str(e).startswith("--engine verl"), str(e)
            outcome[f.name] = "refused"
            continue
        if ov != ov0:
            outcome[f.name] = "command"
            continue
        data0 = data0 or _data(base, tmp_path / "d0")
        assert _data(cfg, tmp_path / "d1") != data0, f"TrainConfig.{f.name} reaches neither verl's command nor its data"
        outcome[f.name] = "data"
    assert {k for k, v in outcome.items() if v == "data"} <= set(launcher.DATA_FIELDS)
    assert outcome["optimizer"] == outcome["weight_decay"] == outcome["grad_clip"] == outcome["val_every"] == "command"
    assert outcome["positive_only"] == outcome["probe_proxy_every"] == outcome["params"] == "refused"


def test_refusal_through_the_cli_is_one_line_and_writes_nothing(tmp_path):
    res = CliRunner().invoke(app, ["--results", str(tmp_path), "train", "--engine", "verl", "--positive-only"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "--positive-only" in res.output
    res = CliRunner().invoke(app, ["--results", str(tmp_path), "train", "--engine", "verl", "--model", "org/other"])
    assert res.exit_code == 2 and "--preset" in res.output  # no silent toy lr / 96-token responses for a real model
    assert not list(tmp_path.glob("train/*"))


def test_missing_gpu_extra_or_cuda_is_named_before_ray_starts(tmp_path, monkeypatch):
    import importlib.util

    import torch

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in ("vllm", "fastapi") else real(n, *a))
    res = CliRunner().invoke(app, ["--results", str(tmp_path), "train", "--engine", "verl"])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "vllm, fastapi not installed" in res.output and "cancel[gpu]" in res.output
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n in launcher.GPU_EXTRA else real(n, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = CliRunner().invoke(app, ["--results", str(tmp_path), "train", "--engine", "verl"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "needs CUDA GPUs" in res.output
    assert not list(tmp_path.glob("train/*"))  # no run folder
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_gpu_extra_pins_what_verl_0_9_1_needs():
    """Item 1: verl's v1 trainer imports transfer_queue, cachetools, fastapi, uvicorn; vllm pinned as verl pins it."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    gpu = {Requirement(r).name.lower(): Requirement(r) for r in extras["gpu"]}
    verl_vllm = [Requirement(r) for r in md.requires("verl") if r.startswith("vllm") and 'extra == "vllm"' in r][0]
    assert str(gpu["vllm"].specifier) == str(verl_vllm.specifier) == "==0.24.0"
    for dist in ("transferqueue", "cachetools", "fastapi", "uvicorn"):
        assert dist in gpu, dist
        assert md.version(dist) in gpu[dist].specifier  # the versions tested here satisfy the pin


def test_launch_runs_verl_in_the_run_folder_and_resumes_there(tmp_path, monkeypatch):
    import subprocess

    from cancel_cli.store import Run, Store

    calls = []

    def fake_verl(cmd, env=None):  # what verl would leave: the trainer's metrics part in cancel.run_dir
        calls.append(cmd)
        run_dir = Path(next(c.split("=", 1)[1] for c in cmd if c.startswith("cancel.run_dir=")))
        Run(run_dir).write_part("metrics", 1, pd.DataFrame([{"step": 1, "reward": 0.5, "groups_split_frac": 0.0,
                                                             "pos_boosted": 0.6, "neg_boosted": 0.4}]))
        return subprocess.CompletedProcess(cmd, 1 if len(calls) == 1 else 0)  # the first run fails, the resumed one not

    monkeypatch.setattr(launcher, "check_environment", lambda: None)
    monkeypatch.setattr(launcher.subprocess, "run", fake_verl)
    store = Store(tmp_path)
    cfg = TrainConfig(steps=2, device="cuda", dtype="bfloat16", val_prompts=4)
    with pytest.raises(UserError, match="verl exited with code"):
        launcher.launch(cfg, store, gpus_per_node=1)
    (failed,) = store.runs("train")
    assert failed.status == "failed" and (failed.path / "data" / "train.parquet").exists()
    run, summary = launcher.launch(cfg, store, gpus_per_node=1, resume=failed.id)
    assert run.id == failed.id and run.status == "done" and summary.reward_last == 0.5
    assert f"trainer.default_local_dir={run.path.resolve() / 'checkpoints'}" in calls[-1]
