"""``cancel reproduce``: every experiment at a preset, every figure and table, and figures/REPORT.md.

Stages run in order with a progress bar; each stage is an ordinary command run in the store, so any
figure can be re-rendered later with ``cancel plot``.  Every stage's settings come from ``experiments/<command>_<scale>.yaml`` (the same presets as ``cancel
<command> --preset``); ``experiments/reproduce_<scale>.yaml`` names the stages.  The toy preset finishes in about 15 minutes on 2
CPU cores; the paper preset uses the paper's settings (M=256, 128 prompts x 8, verl training) and needs
GPUs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from .console import info, progress
from .errors import UserError

SCALES = ("toy", "paper")


@dataclass
class ReproduceConfig:
    """Stage-level choices of ``reproduce`` (``experiments/reproduce_<scale>.yaml``); every stage's own
    settings come from ``experiments/<command>_<scale>.yaml``."""

    train_preset: str = "train_toy"  # "{model}" is replaced by the model name
    probe_proxy_every: int = 5  # Fig. 10 probe on the baseline training run
    budget_axes: list = field(default_factory=lambda: ["batch-size", "rollout-n", "reward-mix"])
    train_variants: dict = field(default_factory=dict)  # label -> TrainConfig overrides
    eval_variants: list = field(default_factory=list)  # train variants evaluated for Table 2


@dataclass
class Stage:
    name: str
    command: str
    config: dict  # the resolved config (eval over train runs: without the run id, known only then)
    run: Callable


def stage_config(command: str, scale: str, model: str, seed: int, device: str, **over):
    """``<command>_<scale>.yaml`` < (model, seed, device, ``over``), as the CLI resolves a preset."""
    from .config import command_config, resolve_config, resolve_device

    cls = command_config(command)
    names = {f.name for f in fields(cls)}
    device, dtype = resolve_device(device)
    typed = {k: v for k, v in dict(model=model, seed=seed, device=device, dtype=dtype).items() if k in names}
    preset = over.pop("preset", f"{command}_{scale}")
    return resolve_config(cls, typed={**typed, **over}, preset=preset, command=command)


def train_preset(rc: ReproduceConfig, model: str) -> str:
    from .config import preset_names

    name = rc.train_preset.format(model=model)
    return name if name in preset_names() else "train_paper"


def stage_plan(model: str, scale: str, seed: int, device: str) -> list[Stage]:
    from .analysis import budget, coupling, entropy_gap, evaluate, flip_run, masking, positive_only, value
    from .config import from_dict, load_preset, to_dict

    if scale not in SCALES:
        raise UserError(f"unknown preset {scale!r} ({' | '.join(SCALES)})")
    rc = from_dict(ReproduceConfig, load_preset(f"reproduce_{scale}"), f"reproduce_{scale}")

    def cfg(command, **over):
        return stage_config(command, scale, model, seed, device, **over)

    out = [Stage("flip", "flip", to_dict(c := cfg("flip", models=[model])), lambda st, c=c: flip_run.run(c, st))]
    for name, module in (("positive-only", positive_only), ("coupling", coupling), ("mask-effect", masking),
                         ("mc-value", value), ("entropy-gap", entropy_gap)):
        c = cfg(name)
        out.append(Stage(name, name, to_dict(c), lambda st, c=c, m=module: m.run(c, st)))
    for axis in rc.budget_axes:
        c = cfg("budget-sweep", axis=axis)
        out.append(Stage(f"budget-sweep {axis}", "budget-sweep", to_dict(c), lambda st, c=c: budget.run(c, st)))
    tp = train_preset(rc, model)
    for i, (label, kw) in enumerate(rc.train_variants.items()):
        probe = {"probe_proxy_every": rc.probe_proxy_every} if i == 0 else {}
        c = cfg("train", preset=tp, **{**kw, **probe})
        out.append(Stage(f"train {label}", "train", to_dict(c), lambda st, c=c: _train(c, st)))
    c = cfg("eval")
    out.append(Stage("eval (Table 2)", "eval", to_dict(c), lambda st, c=c: _eval_trains(evaluate, st, c, rc.eval_variants)))
    c = cfg("eval", sweep_sampling=True)
    out.append(Stage("eval --sweep-sampling (Table 4)", "eval", to_dict(c), lambda st, c=c: evaluate.run(c, st)))
    return out


def stages(model: str, scale: str, seed: int, device: str):
    """(name, run(store)) per stage, in order."""
    return [(s.name, s.run) for s in stage_plan(model, scale, seed, device)]


def _train(tc, store):
    from .grpo import trainer

    if tc.device != "cpu" and tc.model != "toy":
        from .verl_ext.launcher import launch

        return launch(tc, store)
    return trainer.run(tc, store)


def _eval_trains(evaluate, store, cfg, labels):
    from .plots.training import train_runs

    runs = train_runs(store)
    last = None
    for label in labels:
        if label in runs:
            last = evaluate.run(replace(cfg, run=runs[label].id), store)
    return last


def seed_list(preset_name: str, seeds: int | None, seed: int) -> list[int]:
    """``--seeds K``: seeds seed, seed+1, ..., seed+K-1 (default 3 on the toy preset, 1 on paper presets)."""
    k = (3 if preset_name == "toy" else 1) if seeds is None else seeds
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"--seeds must be an integer >= 1, got {seeds!r}")
    return [seed + i for i in range(k)]


def reproduce(model: str, preset_name: str, store, out: Path, seed: int = 0, device: str = "cpu",
              seeds: int | None = None) -> dict:
    """Every stage once per seed (stage by stage, so an interrupted reproduce leaves whole stages over all
    seeds); stage s of seed k runs against the store scoped to (model, seed k), so a stage that reads an
    earlier stage's latest run (entropy-gap reads mc-value, eval reads train) reads its own seed's.  Seeds
    share the process: imports, the tokenizer files and the value cache."""
    seed_ids = seed_list(preset_name, seeds, seed)
    if preset_name == "toy" and model != "toy":
        info(f"[yellow]note: the toy preset with --model {model}: small batches, short responses[/yellow]")
    store.check_writable()
    from .scope import scoped

    plans = {s: stages(model, preset_name, s, device) for s in seed_ids}
    names = [name for name, _ in plans[seed_ids[0]]]
    t0, timings, cpu, runs = time.time(), {}, {}, {}
    with progress("reproduce", len(names) * len(seed_ids)) as advance:
        for j, name in enumerate(names):
            per_seed, per_seed_cpu = [], []
            for s in seed_ids:
                info(f"[bold]stage:[/bold] {name} (seed {s})")
                t, c = time.time(), time.process_time()
                res = plans[s][j][1](scoped(store, model, [s]))
                if res is not None and isinstance(res, tuple) and res and hasattr(res[0], "id"):
                    runs[f"{name} seed {s}"] = res[0].id
                per_seed.append(round(time.time() - t, 1))
                per_seed_cpu.append(round(time.process_time() - c, 1))
                advance()
            timings[name], cpu[name] = per_seed, per_seed_cpu
    from .plots import FIGURES, render
    from .report import write_report

    view = scoped(store, model, seed_ids)
    rendered, missing = [], {}
    for fig in FIGURES:
        try:
            rendered += [str(p) for p in render(fig, view, out)]
        except UserError as e:
            missing[fig] = str(e)
    total = round(time.time() - t0, 1)
    report = write_report(view, out, model, preset_name, timings, missing, seeds=seed_ids, total_seconds=total,
                          cpu_seconds=cpu)
    info(f"reproduce finished in {total} s; report: {report}")
    return {"report": str(report), "seconds": total, "seeds": seed_ids, "stage_seconds": timings,
            "stage_cpu_seconds": cpu, "runs": runs,
            "figures": len(rendered), "missing": missing}
