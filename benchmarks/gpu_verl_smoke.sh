#!/usr/bin/env bash
# GPU check for the verl integration (one GPU, vLLM): two verl steps of GRPO on the toy model (a Qwen3
# architecture) with QB + RB + the per-token probe, then the probe summary from the results store.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[gpu,test]" >/dev/null
export CANCEL_RESULTS=${CANCEL_RESULTS:-/tmp/cancel-smoke}
mkdir -p data/toy_verl
python - <<'PY'
# toy prompts and held-out sets as verl parquet
import pandas as pd
from cancel_cli.tasks.arithmetic import toy_problems
from cancel_cli.verl_ext.data import to_verl_rows
to_verl_rows(toy_problems(512, 0), "train", "none").to_parquet("data/toy_verl/dapo17k.parquet")
to_verl_rows(toy_problems(64, 1, split="heldout"), "test", "none").to_parquet("data/toy_verl/validation.parquet")
PY
python - <<'PY'
import os
from cancel_cli.grpo.trainer import TrainConfig
from cancel_cli.store import Store
from cancel_cli.verl_ext.launcher import launch
cfg = TrainConfig(model="toy", data="data/toy_verl/dapo17k.parquet", prompts=8, n=8, minibatch_prompts=4, steps=2,
                  max_new_tokens=96, lr=1e-4, plan="query-preserved", rb=True, tau=0.25, val_every=2, checkpoint_every=0,
                  device="cuda")
run, _ = launch(cfg, Store(os.environ["CANCEL_RESULTS"]), gpus_per_node=1, data_dir="data/toy_verl",
                extra=("data.max_prompt_length=32", "actor_rollout_ref.rollout.gpu_memory_utilization=0.3",
                       "actor_rollout_ref.rollout.tensor_model_parallel_size=1", "trainer.logger=[console]",
                       "trainer.save_freq=-1", "cancel.probe_tokens=true"))
m = run.read_table("metrics")
cols = [c for c in m.columns if c.startswith(("pos_", "neg_", "all_"))] + [c for c in m.columns if "groups_split" in c or "rb/" in c]
print(m[["step"] + cols].to_string())
PY
