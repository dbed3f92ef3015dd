"""``cancel reproduce``: every experiment at a preset, every figure and table, and figures/REPORT.md.

Stages run in order with a progress bar; each stage is an ordinary command run in the store, so any
figure can be re-rendered later with ``cancel plot``.  The toy preset finishes in about 15 minutes on 2
CPU cores; the paper preset uses the paper's settings (M=256, 128 prompts x 8, verl training) and needs
GPUs.
"""

from __future__ import annotations

import time
from pathlib import Path

from .console import info, progress
from .errors import UserError

TOY = {
    "rollout": dict(temperature=1.0, top_p=1.0, max_new_tokens=96, data="toy"),
    "flip": dict(steps=6, prompts=32, n=8, lr=2e-4, optimizer="adamw", minibatch_prompts=8),
    "positive_only": dict(prompts=32, n=8, optimizer="sgd", lr=0.1, train_steps=8, train_lr=2e-4),
    "coupling": dict(prompts=8, n=8),
    "mask": dict(prompts=8, n=8, candidates=256, mask_size=8, full_candidates=64),
    "mc_value": dict(prompts=16, n=8, M=128, per_cell=16, repeat=5),
    "budget": dict(M=64, candidates=48),
    "train": dict(preset="train_toy", probe_proxy_every=5),
    "eval": dict(k=4, limit=256),
}
PAPER = {
    "rollout": dict(temperature=1.0, top_p=1.0, max_new_tokens=8192, data="dapo17k"),
    "flip": dict(steps=20, prompts=128, n=8, lr=1e-6, optimizer="adamw", minibatch_prompts=32),
    "positive_only": dict(prompts=128, n=8, optimizer="sgd", lr=0.1, train_steps=20, train_lr=1e-6),
    "coupling": dict(prompts=16, n=8),
    "mask": dict(prompts=16, n=8, candidates=256, mask_size=8, full_candidates=64),
    "mc_value": dict(prompts=64, n=8, M=256, per_cell=64, repeat=5),
    "budget": dict(M=256, candidates=256),
    "train": dict(preset=None, probe_proxy_every=10),
    "eval": dict(k=0, limit=0),
}


def stages(model: str, preset: dict, seed: int, device: str):
    from .analysis import budget, coupling, entropy_gap, evaluate, flip_run, masking, positive_only, value
    from .grpo import trainer

    ro = dict(preset["rollout"], model=model, seed=seed, device=device,
              dtype="float32" if device == "cpu" else "bfloat16")
    tr_preset = preset["train"]["preset"] or f"train_{model}"
    out = [
        ("flip", lambda st: flip_run.run([model], {**ro, **preset["flip"]}, st)),
        ("positive-only", lambda st: positive_only.run(positive_only.PositiveOnlyConfig(**ro, **preset["positive_only"]), st)),
        ("coupling", lambda st: coupling.run(coupling.CouplingConfig(**ro, **preset["coupling"]), st)),
        ("mask-effect", lambda st: masking.run(masking.MaskConfig(**ro, **preset["mask"]), st)),
        ("mc-value", lambda st: value.run(value.ValueConfig(**ro, **preset["mc_value"]), st)),
        ("entropy-gap", lambda st: entropy_gap.run(entropy_gap.EntropyGapConfig(seed=seed), st)),
    ]
    for axis in ("batch-size", "rollout-n", "reward-mix"):
        out.append((f"budget-sweep {axis}", lambda st, a=axis: budget.run(
            budget.BudgetConfig(**ro, **preset["budget"], axis=a), st)))
    from .config import load_preset

    base = {k: v for k, v in load_preset(tr_preset).items() if k != "description"}
    base.update(seed=seed, device=device, model=model)
    variants = [("baseline", dict(plan="verl-default", probe_proxy_every=preset["train"]["probe_proxy_every"])),
                ("QB", dict(plan="query-preserved")), ("RB", dict(plan="verl-default", rb=True)),
                ("QB+RB", dict(plan="query-preserved", rb=True)), ("sign-partitioned", dict(plan="sign-partitioned"))]
    for label, kw in variants:
        out.append((f"train {label}", lambda st, kw=kw: _train(trainer, {**base, **kw}, st, device)))
    out.append(("eval (Table 2)", lambda st: _eval_trains(evaluate, st, preset, seed, device)))
    out.append(("eval --sweep-sampling (Table 4)", lambda st: evaluate.run(evaluate.EvalConfig(
        model=model, sweep_sampling=True, k=preset["eval"]["k"], limit=preset["eval"]["limit"], seed=seed,
        device=device, engine="auto"), st)))
    return out


def _train(trainer, cfg: dict, store, device):
    tc = trainer.TrainConfig(**cfg)
    if device != "cpu" and tc.model != "toy":
        from .verl_ext.launcher import launch

        return launch(tc, store)
    return trainer.run(tc, store)


def _eval_trains(evaluate, store, preset, seed, device):
    from .plots.training import train_runs

    runs = train_runs(store)
    last = None
    for label in ("baseline", "QB", "RB", "QB+RB"):
        if label in runs:
            last = evaluate.run(evaluate.EvalConfig(run=runs[label].id, k=preset["eval"]["k"], limit=preset["eval"]["limit"],
                                                    seed=seed, device=device), store)
    return last


def reproduce(model: str, preset_name: str, store, out: Path, seed: int = 0, device: str = "cpu") -> dict:
    presets = {"toy": TOY, "paper": PAPER}
    if preset_name not in presets:
        raise UserError(f"unknown preset {preset_name!r} (toy | paper)")
    if preset_name == "toy" and model != "toy":
        info(f"[yellow]note: the toy preset with --model {model}: small batches, short responses[/yellow]")
    preset = presets[preset_name]
    plan = stages(model, preset, seed, device)
    t0, timings, runs = time.time(), {}, {}
    with progress("reproduce", len(plan)) as advance:
        for name, fn in plan:
            info(f"[bold]stage:[/bold] {name}")
            t = time.time()
            res = fn(store)
            if res is not None and isinstance(res, tuple) and res and hasattr(res[0], "id"):
                runs[name] = res[0].id
            timings[name] = round(time.time() - t, 1)
            advance()
    from .plots import FIGURES, render
    from .report import write_report

    rendered, missing = [], {}
    for fig in FIGURES:
        try:
            rendered += [str(p) for p in render(fig, store, out)]
        except UserError as e:
            missing[fig] = str(e)
    report = write_report(store, out, model, preset_name, timings, missing)
    total = round(time.time() - t0, 1)
    info(f"reproduce finished in {total} s; report: {report}")
    return {"report": str(report), "seconds": total, "stage_seconds": timings, "runs": runs,
            "figures": len(rendered), "missing": missing}
