"""The ``cancel`` command line: one thin function per subcommand (parse -> config -> run).

Heavy imports (torch, transformers, verl) happen inside the commands so ``cancel --help`` is instant.
Bad input raises ``UserError``: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from contextvars import ContextVar
from dataclasses import dataclass, fields
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from .console import SETTINGS
from .errors import UserError
from .validate import flags as check_flags

GLOBAL_OPTIONS = {"--results": True, "--seed": True, "--device": True, "--quiet": False, "--json": False}  # takes a value?


def hoist_global_options(args: list[str]) -> list[str]:
    """Move the global options found after the subcommand to the front, so they work before or after it."""
    front, rest, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        name = a.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            take = 2 if GLOBAL_OPTIONS[name] and "=" not in a else 1
            front += args[i : i + take]
            i += take
            continue
        rest.append(a)
        i += 1
    return front + rest


class CancelGroup(TyperGroup):
    def parse_args(self, ctx, args):
        return super().parse_args(ctx, hoist_global_options(list(args)))


app = typer.Typer(cls=CancelGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Reproduce 'The Cancellation Hypothesis in Critic-Free RL' (token flipping, coupling, "
                       "masked updates, token values, QB/RB batching) on any causal LM. Default model: the "
                       "embedded toy. Global options work before or after the subcommand. Every experiment's "
                       "config is: its dataclass defaults < --preset < the flags you type.")
results_app = typer.Typer(no_args_is_help=True, help="Manage the results store: ls | show RUN | rm RUN.")
data_app = typer.Typer(no_args_is_help=True, help="Data sets: download (from the HF hub) | prepare (verl parquet).")
toy_app = typer.Typer(no_args_is_help=True, help="The embedded toy model: build | info.")
app.add_typer(results_app, name="results")
app.add_typer(data_app, name="data")
app.add_typer(toy_app, name="toy")


@dataclass
class State:
    results: Optional[Path] = None
    seed: Optional[int] = None  # None: not typed (the config's own default applies)
    device: Optional[str] = None


STATE = State()


@app.callback()
def main_options(
    results: Optional[Path] = typer.Option(None, "--results", help="Results store folder (env CANCEL_RESULTS; default ./results)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Global seed (sampling, plans, candidates); default 0."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default: cuda when available) | cpu | cuda | cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars or tables."),
    json_out: bool = typer.Option(False, "--json", help="Print the finished run's id, status and summary as one JSON object on stdout."),
):
    from .validate import global_options

    try:
        global_options(seed, device)
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    global STATE  # fresh per invocation: nothing carries over between two invocations in one process
    STATE = State(results, seed, device)
    SETTINGS.quiet, SETTINGS.json = quiet, json_out


def store(write: bool = True):
    """The results store; commands that write check it is writable before any model is loaded."""
    from .store import Store

    st = Store(STATE.results)
    if write:
        from .validate import command

        st.check_writable(command())  # also the command's folder
    return st


def reset_process_state() -> None:
    """Release what a command leaves in the process (the reward pool), so invocations are independent."""
    reward = sys.modules.get(f"{__package__}.tasks.reward")
    if reward is not None:
        reward.shutdown_pool()


def handled(fn):
    """Turn UserError (and bad values) into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except UserError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (runguard): the run is marked failed and resumable
            typer.echo(f"interrupted ({getattr(e, 'signal_name', 'Ctrl-C')})", err=True)
            raise typer.Exit(getattr(e, "exit_code", 130))
        finally:
            reset_process_state()

    return wrapper


def finish(run, summary) -> None:
    """Print the run's headline summary (rich table, or one JSON object with --json)."""
    from .console import print_table

    if hasattr(summary, "to_json"):  # a summary.Summary dataclass
        summary = {k: v for k, v in summary.to_json().items() if k != "schema"}
    if SETTINGS.json:
        typer.echo(json.dumps({"id": run.id, "status": run.status, "summary": summary}, default=float))
        return
    flat = [{"metric": k, "value": v} for k, v in summary.items() if not isinstance(v, (list, dict))]
    print_table(f"{run.meta.get('command')} {run.id} ({run.status})", flat)


# -- option blocks shared by several commands (added to a command's signature by `options`) -------------
ROLLOUT = {  # the rollout block of every command that samples a GRPO batch
    "model": (str, typer.Option(None, "--model", "-m", help="toy | toy-plain | qwen3-1.7b | qwen3-4b | qwen2.5-math-7b | HF id | local folder.")),
    "prompts": (int, typer.Option(None, "--prompts", help="Prompts per rollout batch.")),
    "n": (int, typer.Option(None, "--n", help="Rollouts per prompt (group size).")),
    "temperature": (float, typer.Option(None, "--temperature", help="Rollout temperature (Table 3: 1.0).")),
    "top_p": (float, typer.Option(None, "--top-p", help="Rollout top-p.")),
    "max_new_tokens": (int, typer.Option(None, "--max-new-tokens", help="Maximum response length.")),
    "data": (str, typer.Option(None, "--data", help="Prompts: toy | dapo17k | path to a JSONL/parquet file.")),
}
PRESET = {"preset": (str, typer.Option(None, "--preset", help="experiments/<name>.yaml (e.g. mc-value_toy), a YAML "
                                                               "file, or a run's run.json (rerun it); typed flags override it."))}
RESUME = {"resume": (str, typer.Option(None, "--resume", help="Continue an unfinished run of this command with its saved config."))}


def options(*blocks: dict, skip: tuple = ()):
    """Add option blocks to a command's signature (one definition, no copies per command); the command
    reads their values through ``config_for``."""

    def deco(fn):
        sig = inspect.signature(fn, eval_str=True)
        added = {k: v for b in blocks for k, v in b.items() if k not in skip and k not in sig.parameters}
        params = list(sig.parameters.values()) + [
            inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=Optional[t])
            for k, (t, opt) in added.items()]
        params.append(inspect.Parameter("cancel_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

        @functools.wraps(fn)
        def wrapper(*a, **kw):
            check_flags(kw)  # bad input (typed values): one line, before any work and before a run folder
            for k in added:
                kw.pop(k, None)
            token = COMMAND_CONTEXT.set(kw.pop("cancel_ctx"))
            try:
                return fn(*a, **kw)
            finally:
                COMMAND_CONTEXT.reset(token)

        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return deco


COMMAND_CONTEXT: ContextVar = ContextVar("cancel_command_context")  # the running command's Click context
TYPED = ("COMMANDLINE", "ENVIRONMENT")  # Click parameter sources of a value the user gave


def typed(ctx, name: str) -> bool:
    return ctx.get_parameter_source(name).name in TYPED


def config_for(cls, *, rename: dict | None = None, cli_only: tuple = (), extra: dict | None = None,
               resumable: tuple = ()):
    """The command's config: dataclass defaults < --preset < the flags the user typed (Click's parameter
    source, never a comparison with defaults); under --resume the run's saved config, where a typed flag
    that differs is refused unless it is in ``resumable``.  Returns (config, resume run id or None)."""
    from .config import resolve_config, resolve_device

    ctx = COMMAND_CONTEXT.get()
    rename, names = rename or {}, {f.name for f in fields(cls)}
    given = {}
    for name, value in ctx.params.items():
        if name in ("preset", "resume", "cancel_ctx") or name in cli_only or not typed(ctx, name):
            continue
        field = rename.get(name, name)
        if field not in names:
            raise RuntimeError(f"option {name} of {ctx.info_name} maps to no {cls.__name__} field")
        given[field] = list(value) if isinstance(value, tuple) else value
    root = ctx.find_root()
    for name in ("seed", "device"):  # typed global options
        if name in names and typed(root, name):
            given[name] = root.params[name]
    given.update(extra or {})
    resume, saved = ctx.params.get("resume"), None
    if resume:
        if "device" in given:
            given["device"] = resolve_device(given["device"])[0]
        saved = store(write=False).get(resume).config
    cfg = resolve_config(cls, typed=given, preset=ctx.params.get("preset"), saved=saved, run_id=resume or "",
                         command=ctx.info_name, resumable=resumable)
    if "device" in names:
        auto = cfg.device == "auto"
        device, dtype = resolve_device(cfg.device, getattr(cfg, "dtype", "auto"))
        cfg.device = device
        if "dtype" in names:
            cfg.dtype = dtype
        if auto and device != "cpu":
            from .console import info

            info(f"device: {device} (--device auto found CUDA; --device cpu to stay on the CPU)")
    return cfg, resume


# ------------------------------------------------------------------------------------------------
@app.command()
@handled
@options(ROLLOUT, PRESET, RESUME)
def train(
    engine: str = typer.Option("torch", "--engine", help="torch (CPU / one GPU) | verl (Ray + FSDP + vLLM)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (may be raised on --resume to extend a run)."),
    minibatch_prompts: Optional[int] = typer.Option(None, "--minibatch-prompts", help="Prompts per mini-batch (verl ppo_mini_batch_size)."),
    qb: bool = typer.Option(False, "--qb", help="Query-preserved mini-batching."),
    rb: bool = typer.Option(False, "--rb", help="Reward-balanced batching."),
    tau: Optional[float] = typer.Option(None, "--tau", help="RB: min(N+,N-) >= tau*|B|, tau in [0, 0.5]."),
    sign_partition: bool = typer.Option(False, "--sign-partition", help="Positive and negative rollouts in separate mini-batches (Fig. 7a)."),
    positive_only: bool = typer.Option(False, "--positive-only", help="Train on A+ = A*1[r=1]."),
    mini_batching: Optional[str] = typer.Option(None, "--mini-batching", help="verl-default | random | query-preserved | sign-partitioned."),
    lr: Optional[float] = typer.Option(None, "--lr"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adamw | sgd."),
    probe_proxy: Optional[int] = typer.Option(None, "--probe-proxy", help="Every k steps, LM-head-only vs full sign agreement (Fig. 10); 0 = off."),
    val_every: Optional[int] = typer.Option(None, "--val-every"),
    dry_run: bool = typer.Option(False, "--dry-run", help="verl engine: print the command instead of running it."),
    nnodes: int = typer.Option(1, "--nnodes", help="verl engine: Ray nodes."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", help="verl engine: GPUs per node."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="verl engine: existing Ray cluster address."),
    tp: int = typer.Option(1, "--tp", help="verl engine: vLLM tensor-parallel size per rollout replica."),
    keep_checkpoints: int = typer.Option(2, "--keep-checkpoints", help="verl engine: keep the last k checkpoints."),
):
    """GRPO training with QB / RB / sign-partitioned / positive-only variants (Fig. 7a, 8, 10)."""
    check_flags(locals())  # bad input: one line, before any work and before a run folder
    from .grpo.trainer import TrainConfig

    from .grpo.trainer import plan_for

    plan = plan_for(qb, sign_partition, mini_batching) if (qb or sign_partition or mini_batching) else None
    from .config import EXTENDABLE

    ctx = COMMAND_CONTEXT.get()
    if engine == "verl" and not ctx.params.get("preset"):  # paper settings of the model (Table 3), not the toy's
        from .verl_ext.launcher import default_preset

        ctx.params["preset"] = default_preset(ctx.params.get("model") or "toy")
    cfg, resume = config_for(TrainConfig, rename={"probe_proxy": "probe_proxy_every"}, resumable=EXTENDABLE,
                             cli_only=("engine", "qb", "sign_partition", "mini_batching", "dry_run", "nnodes",
                                       "gpus_per_node", "ray_address", "tp", "keep_checkpoints"),
                             extra={"plan": plan} if plan else None)
    if engine == "verl":  # verl runs on every GPU it is given (bf16 rollouts), whatever --device says about this process
        cfg.device = cfg.device if cfg.device.startswith("cuda:") else "cuda"
        cfg.dtype = "bfloat16"
    if engine == "verl":
        if resume:
            raise UserError("--resume is available with --engine torch only (verl resumes from its own checkpoints)")
        from .verl_ext.launcher import launch

        run, summary = launch(cfg, store(write=not dry_run), dry_run=dry_run, nnodes=nnodes, gpus_per_node=gpus_per_node,
                              ray_address=ray_address, tp=tp, keep_checkpoints=keep_checkpoints, resume=resume)
        if run is not None:
            finish(run, summary)
        return
    if engine != "torch":
        raise UserError(f"unknown engine {engine!r} (torch | verl)")
    from .grpo.trainer import run as train_run

    run, summary = train_run(cfg, store(), resume=resume)
    finish(run, summary)


@app.command()
@handled
@options(ROLLOUT, PRESET, skip=("model",))
def flip(
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="Repeat for several models (Fig. 9 rows); default toy."),
    steps: Optional[int] = typer.Option(None, "--steps", help="GRPO steps; Alg. 1 at every step."),
    lr: Optional[float] = typer.Option(None, "--lr"), optimizer: Optional[str] = typer.Option(None, "--optimizer"),
    minibatch_prompts: Optional[int] = typer.Option(None, "--minibatch-prompts"),
    from_run: Optional[str] = typer.Option(None, "--from-run", help="Read the probe of a finished train run instead."),
):
    """Token flipping (Fig. 1a-c, Fig. 9): boosted/suppressed/stable ratios by advantage sign at every step."""
    check_flags(locals())  # bad input: one line, before any work and before a run folder
    from .analysis import flip_run

    cfg, _ = config_for(flip_run.FlipConfig, rename={"model": "models"})
    run, summary = flip_run.run(cfg, store())
    finish(run, summary)


@app.command("positive-only")
@handled
@options(ROLLOUT, PRESET)
def positive_only(
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd | adamw (the update of Alg. 2)."),
    lr: Optional[float] = typer.Option(None, "--lr"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Fig. 1d: training steps of positive-only vs GRPO training."),
    train_lr: Optional[float] = typer.Option(None, "--train-lr", help="Fig. 1d: AdamW lr of the two training runs."),
):
    """Alg. 2: positive-only vs joint GRPO update from one theta_0 (Fig. 1d, Fig. 4)."""
    check_flags(locals())  # bad input: one line, before any work and before a run folder
    from .analysis import positive_only as po

    cfg, _ = config_for(po.PositiveOnlyConfig, rename={"steps": "train_steps"})
    run, summary = po.run(cfg, store())
    finish(run, summary)


@app.command()
@handled
@options(ROLLOUT, PRESET)
def coupling(
    pairs: Optional[int] = typer.Option(None, "--pairs", help="Token pairs sampled for the kernel statistics."),
    exact_tokens: Optional[int] = typer.Option(None, "--exact-tokens", help="Tokens for the exact full-parameter kernel."),
    from_batch: Optional[str] = typer.Option(None, "--from-batch", help="Reuse the stored batch of a run."),
):
    """Output-layer coupling kernel (Eq. 6-10, Fig. 2) and its agreement with the exact kernel."""
    check_flags(locals())  # bad input: one line, before any work and before a run folder
    from .analysis import coupling as cp

    cfg, _ = config_for(cp.CouplingConfig)
    run, summary = cp.run(cfg, store())
    finish(run, summary)


@app.command("mask-effect")
@handled
@options(ROLLOUT, PRESET)
def mask_effect(
    candidates: Optional[int] = typer.Option(None, "--candidates"),
    mask_size: Optional[int] = typer.Option(None, "--mask-size", help="|M(c)|, equal for the four conditions."),
    mask_sign: Optional[str] = typer.Option(None, "--mask-sign", help="Advantage sign of the masked tokens: any | same (the "
                                            "candidate's) | positive | negative (README: why positive)."),
    low_conf: Optional[str] = typer.Option(None, "--low-conf", help="Low confidence: p<T (p below T) | qF (p below the F-quantile "
                                           "of p over the batch)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="SGD learning rate (App. D.2: 0.1, no momentum)."),
    full_candidates: Optional[int] = typer.Option(None, "--full-candidates", help="Candidates for the full-parameter path."),
    from_batch: Optional[str] = typer.Option(None, "--from-batch"),
):
    """Masked updates (Table 1, Fig. 3): Boost Rate and Mean Boost of removing coupled tokens."""
    check_flags(locals())  # bad input: one line, before any work and before a run folder
    from .analysis import masking

    cfg, _ = config_for(masking.MaskConfig)
    run, summary = masking.run(cfg, store())
    finish(run, summary)


@app.command("mc-value")
@handled
@options(ROLLOUT, PRESET, RESUME)
def mc_value(
    M: Optional[int] = typer.Option(None, "--M", help="Continuations per branch (paper: 256; >= 2 for a standard error)."),
    per_cell: Optional[int] = typer.Option(None, "--per-cell", help="Tokens per (boosted|suppressed) x (pos|neg) cell."),
    estimator: Optional[str] = typer.Option(None, "--estimator", help="direct (default: s+o_t vs s+a, a != o_t) | eq20 (Eq. 20)."),
    decode_width: Optional[int] = typer.Option(None, "--decode-width", help="Rows of the continuous decode batch."),
    repeat: Optional[int] = typer.Option(None, "--repeat", help="Fig. 11: gap after 1..K repeated updates on the batch."),
    lr: Optional[float] = typer.Option(None, "--lr"), optimizer: Optional[str] = typer.Option(None, "--optimizer"),
    from_batch: Optional[str] = typer.Option(None, "--from-batch"),
):
    """Monte-Carlo counterfactual token value (Sec. 3.2, Fig. 5a, Fig. 11)."""
    check_flags(locals())  # bad input: one line, before any work and before a run folder
    from .analysis import value

    cfg, resume = config_for(value.ValueConfig)
    cfg.validate()  # --estimator, --M >= 2 (a standard error needs two draws): before any run folder
    run, summary = value.run(cfg, store(), resume=resume)
    finish(run, summary)


@app.command("entropy-gap")
@handled
@options(PRESET)
def entropy_gap(
    from_run: Optional[str] = typer.Option(None, "--from-run", help="mc-value run (default: the latest done one)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="Bootstrap resamples for the CIs."),
):
    """Value gap on the top-k% highest-entropy tokens, k = 10..100 (Fig. 5b)."""
    check_flags(locals())  # bad input: one line, before any work and before a run folder
    from .analysis import entropy_gap as eg

    cfg, _ = config_for(eg.EntropyGapConfig)
    run, summary = eg.run(cfg, store())
    finish(run, summary)


@app.command("budget-sweep")
@handled
@options(ROLLOUT, PRESET, RESUME)
def budget_sweep(
    axis: Optional[str] = typer.Option(None, "--axis", help="batch-size | rollout-n | reward-mix."),
    M: Optional[int] = typer.Option(None, "--M"), lr: Optional[float] = typer.Option(None, "--lr"),
    candidates: Optional[int] = typer.Option(None, "--candidates", help="Fixed candidate tokens whose values are cached."),
    values: Optional[str] = typer.Option(None, "--values", help="Comma-separated axis values (default: batch-size "
                                                                 "16..--prompts, rollout-n 1..--n, reward-mix 0..--n)."),
    estimator: Optional[str] = typer.Option(None, "--estimator", help="direct | eq20 (token values)."),
    decode_width: Optional[int] = typer.Option(None, "--decode-width", help="Rows of the continuous decode batch."),
):
    """Value gap vs sampling budget: batch size, rollout-n, reward mix (Fig. 6, Fig. 7b)."""
    check_flags(locals())  # bad input: one line, before any work and before a run folder
    from .analysis import budget

    cfg, resume = config_for(budget.BudgetConfig)
    cfg.validate()
    run, summary = budget.run(cfg, store(), resume=resume)
    finish(run, summary)


@app.command("eval")
@handled
@options(PRESET, RESUME)
def evaluate(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="toy | registry name | HF id | local folder."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Evaluate every checkpoint of a train run."),
    benchmarks: Optional[str] = typer.Option(None, "--benchmarks", help="Comma-separated (default: the six, or the toy sets)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many problems per benchmark."),
    k: Optional[int] = typer.Option(None, "--k", help="Samples per problem (default: 32 for AIME/AMC, 1 otherwise)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Default 0.6."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Default 0.95."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    sweep_sampling: bool = typer.Option(False, "--sweep-sampling", help="Table 4's four (temperature, top-p) settings."),
    engine: Optional[str] = typer.Option(None, "--engine", help="torch | vllm | auto."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir"),
):
    """Benchmarks (Table 2, Table 4): avg@32 for AIME24/25 and AMC, pass@1 for MATH-500/Minerva/Olympiad."""
    check_flags(locals())  # bad input: one line, before any work and before a run folder
    from .analysis import evaluate as ev

    cfg, resume = config_for(ev.EvalConfig, rename={"run_id": "run"})
    run, summary = ev.run(cfg, store(), resume=resume)
    finish(run, summary)


@app.command()
@handled
def plot(
    name: str = typer.Argument(..., help="fig1..fig11, table1, table2, table4, or all."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Use this run instead of the latest done one."),
    out: Path = typer.Option(Path("figures"), "--out", help="Output folder."),
):
    """Render a figure or table (PNG + PDF, tables also as markdown) from the store."""
    from .plots import render

    for p in render(name, store(write=False), out, run_id):
        typer.echo(str(p), err=SETTINGS.json)


@app.command()
@handled
def reproduce(
    model: str = typer.Option("toy", "--model", "-m", help="The model every stage runs on."),
    preset: str = typer.Option("toy", "--preset", help="toy | paper."),
    out: Path = typer.Option(Path("figures"), "--out"),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the stages and their resolved configs; run nothing."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per stochastic stage (default 3 toy, 1 paper)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Stage processes at once (default: one single-"
                                          "threaded worker per core on CPU with a toy model, else 1)."),
):
    """Run every experiment, render every figure and table, and write figures/REPORT.md."""
    check_flags(locals())  # bad input: one line, before any work and before a run folder
    from .config import resolve_device
    from .reproduce import reproduce as rep

    seed, device = STATE.seed or 0, resolve_device(STATE.device or "auto")[0]
    if dry_run:
        from .reproduce import stage_plan

        for stage in stage_plan(model, preset, seed, device):
            typer.echo(json.dumps({"stage": stage.name, "command": stage.command, "config": stage.config}, default=str))
        return
    summary = rep(model, preset, store(), out, seed=seed, device=device, seeds=seeds, workers=workers)
    if SETTINGS.json:
        typer.echo(json.dumps(summary, default=float))


# -- results --------------------------------------------------------------------------------------
@results_app.command("ls")
@handled
def results_ls(command: Optional[str] = typer.Argument(None, help="Only runs of this command.")):
    """List runs: id, command, status, model, start."""
    from .console import print_table

    runs = store(write=False).runs(command)
    rows = [{"id": r.id, "command": r.listing.get("command"), "status": r.state, "model": r.listing.get("model"),
             "start": r.listing.get("start")} for r in runs]
    if SETTINGS.json:
        typer.echo(json.dumps(rows))
    elif not rows:
        typer.echo("no runs")
    else:
        print_table(f"runs in {store(write=False).root}", rows)


@results_app.command("show")
@handled
def results_show(run_id: str):
    """Show a run's run.json and tables."""
    r = store(write=False).get(run_id)
    meta = r.meta
    meta["tables"] = sorted({p.name.split(".")[0] for p in r.path.iterdir() if p.suffix in (".parquet", ".parts")})
    meta["state"], meta["damaged_tables"] = r.state, r.damaged()  # stale / damaged runs (runguard)
    typer.echo(json.dumps(meta, indent=None if SETTINGS.json else 2, default=str))


@results_app.command("rm")
@handled
def results_rm(run_id: str):
    """Delete a run folder."""
    store(write=False).rm(run_id)
    typer.echo(f"removed {run_id}", err=True)


# -- data ------------------------------------------------------------------------------------------
@data_app.command("download")
@handled
def data_download(
    names: Optional[List[str]] = typer.Argument(None, help="aime24 aime25 amc23 math500 minerva olympiadbench dapo17k (default: all)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Default ~/.cache/cancel/data (other folders are remembered)."),
):
    """Fetch the benchmarks and DAPO-17k from the HF hub into the JSONL schema (needs network)."""
    from .tasks.data import HUB_SOURCES, default_data_dir, download

    for p in download(list(names or HUB_SOURCES), out or default_data_dir()):
        typer.echo(str(p))


@data_app.command("prepare")
@handled
def data_prepare(out: Path = typer.Option(Path("data/verl"), "--out"), data_dir: Optional[str] = typer.Option(None, "--data-dir"),
                 template: str = typer.Option("qwen-boxed", "--template")):
    """Write DAPO-17k and the validation benchmarks as parquet in verl's schema."""
    from .verl_ext.data import prepare

    for p in prepare(out, data_dir, template):
        typer.echo(str(p))


# -- toy ------------------------------------------------------------------------------------------
@toy_app.command("build")
@handled
def toy_build(out: Optional[Path] = typer.Option(None, "--out", help="Default: the shipped cancel_cli/assets/<toy | toy-plain>."),
              kind: str = typer.Option("fork", "--kind", help="fork (the toy: solution routes) | plain (toy-plain: column addition only)."),
              target_low: Optional[float] = typer.Option(None, "--target-low", help="Default: 0.445 (fork), 0.40 (plain)."),
              target_high: Optional[float] = typer.Option(None, "--target-high", help="Default: 0.555 (fork), 0.60 (plain).")):
    """Train the toy model from scratch (deterministic for --seed) and save it as an HF folder."""
    from .config import PLAIN_DIR, TOY_DIR
    from .console import info

    if kind not in ("plain", "fork"):
        raise UserError(f"unknown toy kind {kind!r} (fork | plain)")
    from .toy_fork import TARGET as FORK_TARGET, build_fork
    from .toy_model import build_toy

    build, target = (build_fork, FORK_TARGET) if kind == "fork" else (build_toy, (0.40, 0.60))
    low, high = target[0] if target_low is None else target_low, target[1] if target_high is None else target_high
    if not 0 <= low < high <= 1:
        raise UserError(f"need 0 <= target-low < target-high <= 1, got {low}, {high}")
    facts = build(out or (TOY_DIR if kind == "fork" else PLAIN_DIR), seed=STATE.seed or 0, target=(low, high), log=info)
    facts.pop("history")
    typer.echo(json.dumps(facts, default=float) if SETTINGS.json else json.dumps(facts, indent=2))


@toy_app.command("info")
@handled
def toy_info(model: str = typer.Option("toy", "--model", "-m", help="toy | toy-plain."),
             measure: bool = typer.Option(False, "--measure", help="Re-measure the profile at T=1 (512 held-out "
                                          "prompts, 128 groups of 8; --seed) instead of printing the card.")):
    """Print an embedded toy's model card, or re-measure its profile (accuracy, entropy, routes, groups)."""
    from .config import EMBEDDED_BUILDS, resolve_model

    if model not in EMBEDDED_BUILDS:
        raise UserError(f"unknown embedded toy {model!r} ({' | '.join(EMBEDDED_BUILDS)})")
    _, folder = resolve_model(model)
    if not measure:
        typer.echo((folder / "README.md").read_text())
        return
    from .config import load_policy, resolve_device
    from .toy_fork import check_targets, fork_profile

    prof = fork_profile(load_policy(model, resolve_device(STATE.device or "auto")[0]), seed=STATE.seed or 0)
    prof["targets_met"] = check_targets(prof)
    typer.echo(json.dumps(prof, default=float) if SETTINGS.json else json.dumps(prof, indent=2))


def main():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        app()
    except UserError as e:  # raised outside a command body
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
