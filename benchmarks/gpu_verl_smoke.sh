#!/usr/bin/env bash
# GPU smoke test of `cancel train --engine verl` for a user's GPU node (network available, >= 1 CUDA GPU).
# Three verl steps of GRPO on the embedded toy (a Qwen3 architecture vLLM serves) with QB + RB + the
# per-token probe, through the real CLI, then asserts on what the run wrote (not just the exit code):
#   exit 0 and run status done (summarize succeeded); 3 metrics rows, each with positive- and
#   negative-advantage tokens; validation rows at step 0 and at the last step; RB positive share >= tau;
#   rollout (vLLM, bf16) vs actor (FSDP) token probabilities close; a Hugging Face checkpoint that
#   `cancel eval --run` evaluates.  Prints PASS/FAIL per check with the numbers; exit 1 on any FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[gpu,test]"
export CANCEL_RESULTS=${CANCEL_RESULTS:-$(mktemp -d /tmp/cancel-verl-smoke.XXXX)}
mkdir -p "$CANCEL_RESULTS"
NGPU=$(python -c "import torch; print(torch.cuda.device_count())")
TAU=0.25
python -m cancel_cli --json train --engine verl --preset train_toy --steps 3 --prompts 16 --minibatch-prompts 4 \
  --qb --rb --tau "$TAU" --val-every 3 --gpus-per-node "$NGPU" --keep-checkpoints 1 | tail -1 > "$CANCEL_RESULTS/train.json"
RUN=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$CANCEL_RESULTS/train.json")
python -m cancel_cli --json eval --run "$RUN" --limit 32 --k 1 | tail -1 > "$CANCEL_RESULTS/eval.json"
python - "$RUN" "$TAU" <<'PY'
import json, os, sys
from cancel_cli.store import Store
run = Store(os.environ["CANCEL_RESULTS"]).get(sys.argv[1])
tau = float(sys.argv[2])
m, v = run.read_table("metrics"), run.read_table("validation")
ev = json.load(open(os.path.join(os.environ["CANCEL_RESULTS"], "eval.json")))
checks = [
    ("run done, summary written", run.status == "done", f"status {run.status}, summary keys {sorted(run.meta.get('summary', {}))[:6]}"),
    ("3 metrics rows", len(m) == 3, f"{len(m)} rows, steps {list(m.step)}"),
    ("positive and negative tokens every step", bool((m.pos_tokens > 0).all() and (m.neg_tokens > 0).all()),
     f"pos {list(m.pos_tokens)}, neg {list(m.neg_tokens)}"),
    ("validation at step 0 and the end", {0, int(m.step.max())} <= set(v.step), f"validation steps {sorted(set(v.step))}"),
    ("QB keeps groups whole", float(m.groups_split_frac.max()) == 0.0, f"groups_split_frac {list(m.groups_split_frac)}"),
    ("RB positive share >= tau", bool((m.rb_positive_share >= tau).all()), f"{list(m.rb_positive_share.round(3))} (tau {tau})"),
    ("rollout vs actor probs close", float(m["training/rollout_probs_diff_mean"].max()) < 0.02,
     f"max mean |p_vllm - p_fsdp| {m['training/rollout_probs_diff_mean'].max():.4f}, "
     f"corr {m['training/rollout_actor_probs_pearson_corr'].min():.4f}"),
    ("eval --run reads the checkpoint", ev["status"] == "done", f"eval summary {ev['summary']}"),
]
for name, ok, detail in checks:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
sys.exit(0 if all(ok for _, ok, _ in checks) else 1)
PY
