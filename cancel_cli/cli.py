"""The ``cancel`` command line: one thin function per subcommand (parse -> config -> run).

Heavy imports (torch, transformers, verl) happen inside the commands so ``cancel --help`` is instant.
Bad input raises ``UserError``: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .console import SETTINGS
from .errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Reproduce 'The Cancellation Hypothesis in Critic-Free RL' (token flipping, coupling, "
                       "masked updates, token values, QB/RB batching) on any causal LM. Default model: the "
                       "embedded toy.")
results_app = typer.Typer(no_args_is_help=True, help="Manage the results store: ls | show RUN | rm RUN.")
data_app = typer.Typer(no_args_is_help=True, help="Data sets: download (from the HF hub) | prepare (verl parquet).")
toy_app = typer.Typer(no_args_is_help=True, help="The embedded toy model: build | info.")
app.add_typer(results_app, name="results")
app.add_typer(data_app, name="data")
app.add_typer(toy_app, name="toy")


class State:
    results: Optional[Path] = None
    seed: int = 0
    device: str = "cpu"


STATE = State()


@app.callback()
def main_options(
    results: Optional[Path] = typer.Option(None, "--results", help="Results store folder (env CANCEL_RESULTS; default ./results)."),
    seed: int = typer.Option(0, "--seed", help="Global seed (sampling, plans, candidates)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars or tables."),
    json_out: bool = typer.Option(False, "--json", help="Print the finished run's id, status and summary as one JSON object on stdout."),
):
    STATE.results, STATE.seed, STATE.device = results, seed, device
    SETTINGS.quiet, SETTINGS.json = quiet, json_out


def store(write: bool = True):
    """The results store; commands that write check it is writable before any model is loaded."""
    from .store import Store

    st = Store(STATE.results)
    if write:
        st.check_writable()
    return st


def handled(fn):
    """Turn UserError (and bad values) into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except UserError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)

    return wrapper


def finish(run, summary: dict) -> None:
    """Print the run's headline summary (rich table, or one JSON object with --json)."""
    from .console import print_table

    if SETTINGS.json:
        typer.echo(json.dumps({"id": run.id, "status": run.status, "summary": summary}, default=float))
        return
    flat = [{"metric": k, "value": v} for k, v in summary.items() if not isinstance(v, (list, dict))]
    print_table(f"{run.meta.get('command')} {run.id} ({run.status})", flat)


def rollout_kwargs(model, prompts, n, temperature, top_p, max_new_tokens, data):
    return dict(model=model, prompts=prompts, n=n, temperature=temperature, top_p=top_p,
                max_new_tokens=max_new_tokens, data=data, seed=STATE.seed, device=STATE.device,
                dtype="float32" if STATE.device == "cpu" else "bfloat16")


MODEL = typer.Option("toy", "--model", "-m", help="toy | toy-fork | qwen3-1.7b | qwen3-4b | qwen2.5-math-7b | HF id | local folder.")
PROMPTS = typer.Option(32, "--prompts", help="Prompts per rollout batch.")
N = typer.Option(8, "--n", help="Rollouts per prompt (group size).")
TEMP = typer.Option(1.0, "--temperature", help="Rollout temperature (Table 3: 1.0).")
TOPP = typer.Option(1.0, "--top-p", help="Rollout top-p.")
MAXNEW = typer.Option(96, "--max-new-tokens", help="Maximum response length.")
DATA = typer.Option("toy", "--data", help="Prompts: toy | dapo17k | path to a JSONL/parquet file.")
RESUME = typer.Option(None, "--resume", help="Continue an unfinished run of this command.")


# ------------------------------------------------------------------------------------------------
@app.command()
@handled
def train(
    model: str = MODEL, prompts: int = PROMPTS, n: int = N, temperature: float = TEMP, top_p: float = TOPP,
    max_new_tokens: int = MAXNEW, data: str = DATA,
    engine: str = typer.Option("torch", "--engine", help="torch (CPU / one GPU) | verl (Ray + FSDP + vLLM)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="experiments/<preset>.yaml (e.g. train_toy); flags override it."),
    steps: Optional[int] = typer.Option(None, "--steps"),
    minibatch_prompts: Optional[int] = typer.Option(None, "--minibatch-prompts", help="Prompts per mini-batch (verl ppo_mini_batch_size)."),
    qb: bool = typer.Option(False, "--qb", help="Query-preserved mini-batching."),
    rb: bool = typer.Option(False, "--rb", help="Reward-balanced batching."),
    tau: Optional[float] = typer.Option(None, "--tau", help="RB: min(N+,N-) >= tau*|B|, tau in [0, 0.5]."),
    sign_partition: bool = typer.Option(False, "--sign-partition", help="Positive and negative rollouts in separate mini-batches (Fig. 7a)."),
    positive_only: bool = typer.Option(False, "--positive-only", help="Train on A+ = A*1[r=1]."),
    mini_batching: Optional[str] = typer.Option(None, "--mini-batching", help="verl-default | random | query-preserved | sign-partitioned."),
    lr: Optional[float] = typer.Option(None, "--lr"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adamw | sgd."),
    probe_proxy: int = typer.Option(0, "--probe-proxy", help="Every k steps, LM-head-only vs full sign agreement (Fig. 10); 0 = off."),
    val_every: Optional[int] = typer.Option(None, "--val-every"),
    resume: Optional[str] = RESUME,
    dry_run: bool = typer.Option(False, "--dry-run", help="verl engine: print the command instead of running it."),
    nnodes: int = typer.Option(1, "--nnodes", help="verl engine: Ray nodes."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", help="verl engine: GPUs per node."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="verl engine: existing Ray cluster address."),
):
    """GRPO training with QB / RB / sign-partitioned / positive-only variants (Fig. 7a, 8, 10)."""
    from .grpo.trainer import TrainConfig
    from .analysis.common import from_dict
    from .config import load_preset

    plan = mini_batching or ("query-preserved" if qb else "sign-partitioned" if sign_partition else "verl-default")
    if qb and sign_partition:
        raise UserError("--qb and --sign-partition are different mini-batch plans; pick one")
    base = load_preset(preset) if preset else {}
    base.pop("description", None)
    over = dict(rollout_kwargs(model, prompts, n, temperature, top_p, max_new_tokens, data), plan=plan, rb=rb,
                positive_only=positive_only, probe_proxy_every=probe_proxy)
    for k, v in dict(steps=steps, minibatch_prompts=minibatch_prompts, tau=tau, lr=lr, optimizer=optimizer,
                     val_every=val_every).items():
        if v is not None:
            over[k] = v
    if preset:  # preset values win over the defaults of flags the user did not give
        defaults = dict(model="toy", prompts=32, n=8, temperature=1.0, top_p=1.0, max_new_tokens=96, data="toy")
        over = {k: v for k, v in over.items() if not (k in defaults and v == defaults[k] and k in base)}
    cfg = from_dict(TrainConfig, {**base, **over})
    if engine == "verl":
        from .verl_ext.launcher import launch

        run, summary = launch(cfg, store(), dry_run=dry_run, nnodes=nnodes, gpus_per_node=gpus_per_node,
                              ray_address=ray_address)
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
def flip(
    model: List[str] = typer.Option(["toy"], "--model", "-m", help="Repeat for several models (Fig. 9 rows)."),
    steps: int = typer.Option(5, "--steps", help="GRPO steps; Alg. 1 at every step."),
    prompts: int = PROMPTS, n: int = N, temperature: float = TEMP, top_p: float = TOPP, max_new_tokens: int = MAXNEW,
    data: str = DATA, lr: float = typer.Option(2e-4, "--lr"), optimizer: str = typer.Option("adamw", "--optimizer"),
    minibatch_prompts: int = typer.Option(8, "--minibatch-prompts"),
    from_run: Optional[str] = typer.Option(None, "--from-run", help="Read the probe of a finished train run instead."),
):
    """Token flipping (Fig. 1a-c, Fig. 9): boosted/suppressed/stable ratios by advantage sign at every step."""
    from .analysis import flip_run

    run, summary = flip_run.run(model, dict(rollout_kwargs("toy", prompts, n, temperature, top_p, max_new_tokens, data),
                                            steps=steps, lr=lr, optimizer=optimizer, minibatch_prompts=minibatch_prompts),
                                store(), from_run=from_run)
    finish(run, summary)


@app.command("positive-only")
@handled
def positive_only(
    model: str = MODEL, prompts: int = PROMPTS, n: int = N, temperature: float = TEMP, top_p: float = TOPP,
    max_new_tokens: int = MAXNEW, data: str = DATA,
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd | adamw (the update of Alg. 2)."),
    lr: float = typer.Option(0.1, "--lr"),
    steps: int = typer.Option(8, "--steps", help="Fig. 1d: training steps of positive-only vs GRPO training."),
    train_lr: float = typer.Option(2e-4, "--train-lr", help="Fig. 1d: AdamW lr of the two training runs."),
):
    """Alg. 2: positive-only vs joint GRPO update from one theta_0 (Fig. 1d, Fig. 4)."""
    from .analysis import positive_only as po

    cfg = po.PositiveOnlyConfig(**rollout_kwargs(model, prompts, n, temperature, top_p, max_new_tokens, data),
                                optimizer=optimizer, lr=lr, train_steps=steps, train_lr=train_lr)
    run, summary = po.run(cfg, store())
    finish(run, summary)


@app.command()
@handled
def coupling(
    model: str = MODEL, prompts: int = typer.Option(8, "--prompts"), n: int = N, temperature: float = TEMP,
    top_p: float = TOPP, max_new_tokens: int = MAXNEW, data: str = DATA,
    pairs: int = typer.Option(200_000, "--pairs", help="Token pairs sampled for the kernel statistics."),
    exact_tokens: int = typer.Option(64, "--exact-tokens", help="Tokens for the exact full-parameter kernel."),
    from_batch: Optional[str] = typer.Option(None, "--from-batch", help="Reuse the stored batch of a run."),
):
    """Output-layer coupling kernel (Eq. 6-10, Fig. 2) and its agreement with the exact kernel."""
    from .analysis import coupling as cp

    cfg = cp.CouplingConfig(**rollout_kwargs(model, prompts, n, temperature, top_p, max_new_tokens, data),
                            pairs=pairs, exact_tokens=exact_tokens, from_batch=from_batch or "")
    run, summary = cp.run(cfg, store())
    finish(run, summary)


@app.command("mask-effect")
@handled
def mask_effect(
    model: str = MODEL, prompts: int = typer.Option(8, "--prompts"), n: int = N, temperature: float = TEMP,
    top_p: float = TOPP, max_new_tokens: int = MAXNEW, data: str = DATA,
    candidates: int = typer.Option(256, "--candidates"),
    mask_size: int = typer.Option(8, "--mask-size", help="|M(c)|, equal for the four conditions."),
    low_conf_quantile: float = typer.Option(0.5, "--low-conf-quantile", help="Low confidence: p below this quantile of p."),
    lr: float = typer.Option(0.1, "--lr", help="SGD learning rate (App. D.2: 0.1, no momentum)."),
    full_candidates: int = typer.Option(64, "--full-candidates", help="Candidates for the full-parameter path."),
    from_batch: Optional[str] = typer.Option(None, "--from-batch"),
):
    """Masked updates (Table 1, Fig. 3): Boost Rate and Mean Boost of removing coupled tokens."""
    from .analysis import masking

    cfg = masking.MaskConfig(**rollout_kwargs(model, prompts, n, temperature, top_p, max_new_tokens, data),
                             candidates=candidates, mask_size=mask_size, low_conf_quantile=low_conf_quantile, lr=lr,
                             full_candidates=full_candidates, from_batch=from_batch or "")
    run, summary = masking.run(cfg, store())
    finish(run, summary)


@app.command("mc-value")
@handled
def mc_value(
    model: str = MODEL, prompts: int = typer.Option(16, "--prompts"), n: int = N, temperature: float = TEMP,
    top_p: float = TOPP, max_new_tokens: int = MAXNEW, data: str = DATA,
    m: int = typer.Option(256, "--M", help="Continuations from s+a and from s (paper: 256)."),
    per_cell: int = typer.Option(16, "--per-cell", help="Tokens per (boosted|suppressed) x (pos|neg) cell."),
    repeat: int = typer.Option(1, "--repeat", help="Fig. 11: gap after 1..K repeated updates on the batch."),
    lr: float = typer.Option(0.1, "--lr"), optimizer: str = typer.Option("sgd", "--optimizer"),
    from_batch: Optional[str] = typer.Option(None, "--from-batch"), resume: Optional[str] = RESUME,
):
    """Monte-Carlo counterfactual token value (Eq. 20, Fig. 5a, Fig. 11)."""
    from .analysis import value

    cfg = value.ValueConfig(**rollout_kwargs(model, prompts, n, temperature, top_p, max_new_tokens, data), M=m,
                            per_cell=per_cell, repeat=repeat, lr=lr, optimizer=optimizer, from_batch=from_batch or "")
    run, summary = value.run(cfg, store(), resume=resume)
    finish(run, summary)


@app.command("entropy-gap")
@handled
def entropy_gap(
    from_run: Optional[str] = typer.Option(None, "--from-run", help="mc-value run (default: the latest done one)."),
    boot: int = typer.Option(2000, "--bootstrap", help="Bootstrap resamples for the CIs."),
):
    """Value gap on the top-k% highest-entropy tokens, k = 10..100 (Fig. 5b)."""
    from .analysis import entropy_gap as eg

    run, summary = eg.run(eg.EntropyGapConfig(from_run=from_run or "", bootstrap=boot, seed=STATE.seed), store())
    finish(run, summary)


@app.command("budget-sweep")
@handled
def budget_sweep(
    axis: str = typer.Option("batch-size", "--axis", help="batch-size | rollout-n | reward-mix."),
    model: str = MODEL, temperature: float = TEMP, top_p: float = TOPP, max_new_tokens: int = MAXNEW, data: str = DATA,
    m: int = typer.Option(64, "--M"), lr: float = typer.Option(0.1, "--lr"),
    candidates: int = typer.Option(48, "--candidates", help="Fixed candidate tokens whose values are cached."),
    values: Optional[str] = typer.Option(None, "--values", help="Comma-separated axis values (default: paper's)."),
    resume: Optional[str] = RESUME,
):
    """Value gap vs sampling budget: batch size, rollout-n, reward mix (Fig. 6, Fig. 7b)."""
    from .analysis import budget

    cfg = budget.BudgetConfig(**rollout_kwargs(model, 96, 8, temperature, top_p, max_new_tokens, data), axis=axis,
                              M=m, lr=lr, candidates=candidates, values=values or "")
    run, summary = budget.run(cfg, store(), resume=resume)
    finish(run, summary)


@app.command("eval")
@handled
def evaluate(
    model: str = MODEL,
    run_id: Optional[str] = typer.Option(None, "--run", help="Evaluate every checkpoint of a train run."),
    benchmarks: Optional[str] = typer.Option(None, "--benchmarks", help="Comma-separated (default: the six, or the toy sets)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many problems per benchmark."),
    k: Optional[int] = typer.Option(None, "--k", help="Samples per problem (default: 32 for AIME/AMC, 1 otherwise)."),
    temperature: float = typer.Option(0.6, "--temperature"), top_p: float = typer.Option(0.95, "--top-p"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    sweep_sampling: bool = typer.Option(False, "--sweep-sampling", help="Table 4's four (temperature, top-p) settings."),
    engine: str = typer.Option("auto", "--engine", help="torch | vllm | auto."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir"), resume: Optional[str] = RESUME,
):
    """Benchmarks (Table 2, Table 4): avg@32 for AIME24/25 and AMC, pass@1 for MATH-500/Minerva/Olympiad."""
    from .analysis import evaluate as ev

    cfg = ev.EvalConfig(model=model, run=run_id or "", benchmarks=benchmarks or "", limit=limit or 0, k=k or 0,
                        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens or 0,
                        sweep_sampling=sweep_sampling, engine=engine, data_dir=data_dir or "", seed=STATE.seed,
                        device=STATE.device)
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
    model: str = MODEL,
    preset: str = typer.Option("toy", "--preset", help="toy | paper."),
    out: Path = typer.Option(Path("figures"), "--out"),
):
    """Run every experiment, render every figure and table, and write figures/REPORT.md."""
    from .reproduce import reproduce as rep

    summary = rep(model, preset, store(), out, seed=STATE.seed, device=STATE.device)
    if SETTINGS.json:
        typer.echo(json.dumps(summary, default=float))


# -- results --------------------------------------------------------------------------------------
@results_app.command("ls")
@handled
def results_ls(command: Optional[str] = typer.Argument(None, help="Only runs of this command.")):
    """List runs: id, command, status, model, start."""
    from .console import print_table

    runs = store(write=False).runs(command)
    rows = [{"id": r.id, "command": r.meta.get("command"), "status": r.status, "model": r.meta.get("model"),
             "start": r.meta.get("start")} for r in runs]
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
    out: Path = typer.Option(Path.home() / ".cache" / "cancel" / "data", "--out"),
):
    """Fetch the benchmarks and DAPO-17k from the HF hub into the JSONL schema (needs network)."""
    from .tasks.data import HUB_SOURCES, download

    for p in download(list(names or HUB_SOURCES), out):
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
def toy_build(out: Optional[Path] = typer.Option(None, "--out", help="Default: the shipped cancel_cli/assets/<toy | toy-fork>."),
              kind: str = typer.Option("plain", "--kind", help="plain (the toy) | fork (toy-fork: solution routes)."),
              target_low: Optional[float] = typer.Option(None, "--target-low", help="Default: 0.40 (plain), 0.445 (fork)."),
              target_high: Optional[float] = typer.Option(None, "--target-high", help="Default: 0.60 (plain), 0.555 (fork).")):
    """Train the toy model from scratch (deterministic for --seed) and save it as an HF folder."""
    from .config import FORK_DIR, TOY_DIR
    from .console import info

    if kind not in ("plain", "fork"):
        raise UserError(f"unknown toy kind {kind!r} (plain | fork)")
    from .toy_fork import TARGET as FORK_TARGET, build_fork
    from .toy_model import build_toy

    build, target = (build_fork, FORK_TARGET) if kind == "fork" else (build_toy, (0.40, 0.60))
    low, high = target[0] if target_low is None else target_low, target[1] if target_high is None else target_high
    if not 0 <= low < high <= 1:
        raise UserError(f"need 0 <= target-low < target-high <= 1, got {low}, {high}")
    facts = build(out or (FORK_DIR if kind == "fork" else TOY_DIR), seed=STATE.seed, target=(low, high), log=info)
    facts.pop("history")
    typer.echo(json.dumps(facts, default=float) if SETTINGS.json else json.dumps(facts, indent=2))


@toy_app.command("info")
@handled
def toy_info(model: str = typer.Option("toy", "--model", "-m", help="toy | toy-fork."),
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
    from .config import load_policy
    from .toy_fork import check_targets, fork_profile

    prof = fork_profile(load_policy(model, STATE.device), seed=STATE.seed)
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
