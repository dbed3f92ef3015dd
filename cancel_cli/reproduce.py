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


# Order of the stages by expected cost on the toy preset (work per seed: coupling and entropy-gap do one
# forward / no model; train variants are ~150 CPU-s each, measured); used only to run cheap stages first so
# an interrupted reproduce still has whole claims.  A stage runs after the stages it reads (REQUIRES).
COST_RANK = ["entropy-gap", "coupling", "positive-only", "flip", "mask-effect", "mc-value", "budget-sweep", "train",
             "eval"]
REQUIRES = {"entropy-gap": ("mc-value",), "eval": ("train",)}


def _kind(name: str) -> str:
    return next((k for k in COST_RANK if name.startswith(k)), name)


def cheapest_first(names: list[str]) -> list[str]:
    """Stages sorted by COST_RANK (unknown ones last, in their order), each after the stages it requires."""
    rank = {k: i for i, k in enumerate(COST_RANK)}

    def key(i):
        k = _kind(names[i])
        r = max([rank.get(k, len(rank))] + [rank.get(d, len(rank)) for d in REQUIRES.get(k, ())])
        return (r, k in REQUIRES, i)

    return [names[i] for i in sorted(range(len(names)), key=key)]


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
    presets = {"toy": TOY, "paper": PAPER}
    if preset_name not in presets:
        raise UserError(f"unknown preset {preset_name!r} (toy | paper)")
    seed_ids = seed_list(preset_name, seeds, seed)
    if preset_name == "toy" and model != "toy":
        info(f"[yellow]note: the toy preset with --model {model}: small batches, short responses[/yellow]")
    store.check_writable()
    from .scope import scoped

    preset = presets[preset_name]
    plans = {s: stages(model, preset, s, device) for s in seed_ids}
    index = {name: j for j, (name, _) in enumerate(plans[seed_ids[0]])}
    names = cheapest_first(list(index))
    t0, timings, cpu, runs = time.time(), {}, {}, {}
    with progress("reproduce", len(names) * len(seed_ids)) as advance:
        for name in names:
            j = index[name]
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
