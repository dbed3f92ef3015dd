"""``cancel reproduce``: every experiment at a preset, every figure and table, and figures/REPORT.md.

Stages run in order with a progress bar; each stage is an ordinary command run in the store, so any
figure can be re-rendered later with ``cancel plot``.  Every stage's settings come from ``experiments/<command>_<scale>.yaml`` (the same presets as ``cancel
<command> --preset``); ``experiments/reproduce_<scale>.yaml`` names the stages.  The toy preset (3 seeds, 2 single-threaded
workers) finished in 1,080 s on 2 idle CPU cores (measured 2026-11-30); the paper preset uses the paper's settings (M=256, 128 prompts x 8, verl training) and needs
GPUs.
"""

from __future__ import annotations

import os
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
    model_train_presets: dict = field(default_factory=dict)  # model -> its own train preset (before train_preset)
    probe_proxy_every: int = 5  # Fig. 10 probe on the baseline training run
    budget_axes: list = field(default_factory=lambda: ["batch-size", "rollout-n", "reward-mix"])
    train_variants: dict = field(default_factory=dict)  # label -> TrainConfig overrides
    eval_variants: list = field(default_factory=list)  # train variants evaluated for Table 2
    # command -> config items that replace its preset's in reproduce only (sizes reduced so K seeds fit the time
    # budget); REPORT.md lists each one beside the preset's value
    stage_overrides: dict = field(default_factory=dict)


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


def overrides_text(model: str, scale: str) -> list[str]:
    """One line per reduced setting of ``reproduce_<scale>.yaml``: ``command: key value (preset: value)``."""
    from .config import from_dict, load_preset

    rc = from_dict(ReproduceConfig, load_preset(f"reproduce_{scale}"), f"reproduce_{scale}")
    out = []
    for command, items in rc.stage_overrides.items():
        preset = train_preset(rc, model) if command == "train" else f"{command}_{scale}"
        base = load_preset(preset)
        out.append(f"{command}: " + ", ".join(f"{k} {v} (`{preset}`: {base.get(k, 'default')})" for k, v in items.items()))
    return out


def train_preset(rc: ReproduceConfig, model: str) -> str:
    from .config import preset_names

    if model in rc.model_train_presets:
        return rc.model_train_presets[model]
    name = rc.train_preset.format(model=model)
    return name if name in preset_names() else "train_paper"


def stage_plan(model: str, scale: str, seed: int, device: str) -> list[Stage]:
    from .analysis import budget, coupling, entropy_gap, evaluate, flip_run, masking, positive_only, value
    from .config import from_dict, load_preset, to_dict

    if scale not in SCALES:
        raise UserError(f"unknown preset {scale!r} ({' | '.join(SCALES)})")
    rc = from_dict(ReproduceConfig, load_preset(f"reproduce_{scale}"), f"reproduce_{scale}")

    def cfg(command, **over):
        return stage_config(command, scale, model, seed, device, **{**rc.stage_overrides.get(command, {}), **over})

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
        c = cfg("train", preset=tp, **kw, **probe)
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


def default_workers(model: str, device: str) -> int:
    """Worker processes when ``--workers`` is not given: on CPU with an embedded toy, one single-threaded worker per
    core (at most 8): the toy's decode steps are too small for intra-op threads (measured on 2 cores: sampling 256
    rollouts takes 1.34 s on one thread vs 1.61 s on two, and collapses when two 2-thread processes share the
    cores), so two one-thread workers do about twice the work of one two-thread process.  On CUDA or with a hub
    model: one worker (the device and the memory are not shared)."""
    from .tasks import TOYS

    if device != "cpu" or model not in TOYS:
        return 1
    return max(1, min(8, os.cpu_count() or 1))


def check_workers(workers) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UserError(f"--workers must be an integer >= 1, got {workers!r}")


def stage_deps(names: list[str]) -> dict[str, list[str]]:
    """name -> the stages (of the same seed) it must wait for: REQUIRES by kind, and every budget-sweep axis after
    the first (the axes share one pool and its cached candidate values)."""
    budget = [n for n in names if _kind(n) == "budget-sweep"]
    out = {}
    for n in names:
        deps = [d for d in names if _kind(d) in REQUIRES.get(_kind(n), ())]
        if n in budget[1:]:
            deps.append(budget[0])
        out[n] = deps
    return out


def _worker_init() -> None:
    """A reproduce worker stops its reward pool when it exits: multiprocessing joins a process's non-daemon
    children at exit, and the pool's workers would wait for work forever (they only watch for a dead parent)."""
    from multiprocessing.util import Finalize

    from .tasks.reward import shutdown_pool

    Finalize(None, shutdown_pool, kwargs={"wait": True}, exitpriority=100)  # before multiprocessing's queue finalizers


def _stage_task(plan_fn, model, preset_name, seed, device, name, root, threads):
    """One (stage, seed) in a worker process: its own single-threaded torch, quiet console, the store scoped to
    (model, seed).  Returns (wall s, CPU s, run id or None)."""
    import torch

    from .console import SETTINGS
    from .scope import scoped
    from .store import Store

    torch.set_num_threads(threads)
    SETTINGS.quiet = True
    fn = dict(plan_fn(model, preset_name, seed, device))[name]
    t, c = time.time(), time.process_time()
    res = fn(scoped(Store(root), model, [seed]))
    rid = res[0].id if isinstance(res, tuple) and res and hasattr(res[0], "id") else None
    return round(time.time() - t, 1), round(time.process_time() - c, 1), rid


def _run_parallel(plan_fn, model, preset_name, seed_ids, device, names, root, workers, advance):
    """Every (stage, seed) on a pool of ``workers`` spawned processes: cheapest stages first, each only after the
    stages it depends on (same seed) are done; the first failure cancels the rest and is raised here."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import pickle

    try:
        pickle.dumps(plan_fn)
    except Exception:
        raise RuntimeError(f"the stage plan {plan_fn!r} cannot be sent to worker processes; use workers=1") from None
    deps = stage_deps(names)
    todo = [(n, s) for n in names for s in seed_ids]
    done: set = set()
    res: dict = {}
    threads = 1  # the toy decodes fastest on one thread per process (see default_workers)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        running = {}
        try:
            while todo or running:
                for n, s in [t for t in todo if all((d, t[1]) in done for d in deps[t[0]])]:
                    if len(running) >= workers:
                        break
                    todo.remove((n, s))
                    info(f"[bold]stage:[/bold] {n} (seed {s}) started")
                    running[pool.submit(_stage_task, plan_fn, model, preset_name, s, device, n, str(root), threads)] = (n, s)
                if not running:
                    raise RuntimeError(f"stages {todo} wait on stages that never run")  # a dependency cycle: a bug
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    n, s = running.pop(f)
                    res[(n, s)] = f.result()  # a stage's error is raised here
                    done.add((n, s))
                    info(f"[bold]stage:[/bold] {n} (seed {s}) done in {res[(n, s)][0]} s")
                    advance()
        except BaseException:  # stop every worker now: a stage may run for minutes
            procs = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.terminate()
            raise
    return res


def reproduce(model: str, preset_name: str, store, out: Path, seed: int = 0, device: str = "cpu",
              seeds: int | None = None, workers: int | None = None) -> dict:
    """Every stage once per seed; stage s of seed k runs against the store scoped to (model, seed k), so a stage
    that reads an earlier stage's latest run (entropy-gap reads mc-value, eval reads train) reads its own seed's.

    ``workers`` = 1: in this process, stage by stage over all seeds (an interrupted reproduce leaves whole stages
    over all seeds; seeds share imports and model loads).  ``workers`` > 1 (default on CPU with a toy: one per
    core, see ``default_workers``): (stage, seed) tasks on that many single-threaded processes, cheapest first,
    each after its dependencies."""
    seed_ids = seed_list(preset_name, seeds, seed)
    check_workers(workers)
    if preset_name == "toy" and model != "toy":
        info(f"[yellow]note: the toy preset with --model {model}: small batches, short responses[/yellow]")
    store.check_writable()
    from .scope import scoped

    plans = {s: stages(model, preset_name, s, device) for s in seed_ids}
    index = {name: j for j, (name, _) in enumerate(plans[seed_ids[0]])}
    names = cheapest_first(list(index))
    workers = min(workers or default_workers(model, device), len(names) * len(seed_ids))
    t0, timings, cpu, runs = time.time(), {}, {}, {}
    with progress("reproduce", len(names) * len(seed_ids)) as advance:
        if workers > 1:
            res = _run_parallel(stages, model, preset_name, seed_ids, device, names, store.root, workers, advance)
            for name in names:
                timings[name] = [res[(name, s)][0] for s in seed_ids]
                cpu[name] = [res[(name, s)][1] for s in seed_ids]
                runs.update({f"{name} seed {s}": res[(name, s)][2] for s in seed_ids if res[(name, s)][2]})
        for name in names if workers == 1 else []:
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
                          cpu_seconds=cpu, workers=workers, reduced=overrides_text(model, preset_name))
    info(f"reproduce finished in {total} s; report: {report}")
    return {"report": str(report), "seconds": total, "seeds": seed_ids, "workers": workers, "stage_seconds": timings,
            "stage_cpu_seconds": cpu, "runs": runs,
            "figures": len(rendered), "missing": missing}
