#!/usr/bin/env bash
# GPU smoke test of the torch engine for an OFFLINE GPU machine that has torch and transformers only.
#
#   1. On a machine with network (once):   benchmarks/gpu_torch_smoke.sh download [PYVER] [--with-pandas]
#      pip-downloads small wheels into benchmarks/wheels/ (git-ignored; ~7 MB: math-verify and its
#      parsers, sympy, mpmath; with --with-pandas also pandas + pyarrow for PYVER, ~55 MB more).
#   2. Carry the working tree + benchmarks/wheels to the GPU machine and run:  benchmarks/gpu_torch_smoke.sh
#      It installs from the wheels only what is missing (no index), installs the project with --no-deps
#      (or runs it from the checkout), then on CUDA: train (torch engine, QB + RB, 3 steps), mc-value
#      (small M), eval on the toy sets and on the train run's checkpoint; PASS/FAIL per check with the
#      numbers; exit 1 on any FAIL.  Takes 1-3 minutes on one GPU (toy model); the budget is 6 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-benchmarks/wheels}
SMALL="math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2 sympy mpmath"
if [ "${1:-}" = "download" ]; then
  PYVER=${2:-$(python -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')}
  mkdir -p "$WHEELS"
  python -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" $SMALL
  if [ "${3:-}" = "--with-pandas" ] || [ "${2:-}" = "--with-pandas" ]; then
    [ "${2:-}" = "--with-pandas" ] && PYVER=$(python -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
    python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --platform manylinux2014_x86_64 \
      --platform manylinux_2_28_x86_64 -d "$WHEELS" pandas pyarrow python-dateutil pytz tzdata six
  fi
  du -sh "$WHEELS"; ls "$WHEELS"
  exit 0
fi

T0=$(date +%s)
export DEVICE=${DEVICE:-cuda}  # DEVICE=cpu checks the script itself on a CPU machine (slower)
export CANCEL_RESULTS=${CANCEL_RESULTS:-$(mktemp -d /tmp/cancel-torch-smoke.XXXX)}
mkdir -p "$CANCEL_RESULTS"
# -- environment: install from the carried wheels only what this machine lacks ----------------------
python - "$WHEELS" <<'PY'
import importlib.util, subprocess, sys
need = {"math_verify": "math-verify", "latex2sympy2_extended": "latex2sympy2_extended", "antlr4": "antlr4-python3-runtime",
        "sympy": "sympy", "mpmath": "mpmath", "pandas": "pandas", "pyarrow": "pyarrow", "yaml": "pyyaml", "typer": "typer",
        "rich": "rich"}
missing = [d for m, d in need.items() if importlib.util.find_spec(m) is None]
if "pandas" in missing:  # pandas 2.x's own dependencies, also in the wheels folder (download --with-pandas)
    missing += [d for m, d in {"dateutil": "python-dateutil", "pytz": "pytz", "tzdata": "tzdata", "six": "six"}.items()
                if importlib.util.find_spec(m) is None]
if missing:
    print("installing from", sys.argv[1], ":", " ".join(missing), flush=True)
    subprocess.call([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--find-links", sys.argv[1], *missing])
PY
python -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 \
  || echo "note: project not installed (no setuptools?); running it from the checkout"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python - <<'PY'
import importlib.util, os, sys
missing = [m for m in ("torch", "transformers", "math_verify", "pandas", "pyarrow", "typer", "rich", "yaml")
           if importlib.util.find_spec(m) is None]
import torch
ok = not missing and (torch.cuda.is_available() or os.environ["DEVICE"] == "cpu")
print(f"{'PASS' if ok else 'FAIL'}  environment: torch {torch.__version__}, CUDA {torch.cuda.is_available()}"
      f"{' (' + torch.cuda.get_device_name(0) + ')' if torch.cuda.is_available() else ''}, missing: {missing or 'nothing'}")
sys.exit(0 if ok else 1)
PY
[ $? -eq 0 ] || exit 1

C="python -m cancel_cli --device $DEVICE --json"
$C train --preset train_toy --steps 3 --qb --rb --val-every 3 2>"$CANCEL_RESULTS/train.err" | tail -1 > "$CANCEL_RESULTS/train.json" || true
$C mc-value --prompts 4 --M 16 --per-cell 2 2>"$CANCEL_RESULTS/mc.err" | tail -1 > "$CANCEL_RESULTS/mc.json" || true
$C eval --limit 64 --k 4 2>"$CANCEL_RESULTS/eval.err" | tail -1 > "$CANCEL_RESULTS/eval.json" || true
RUN=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$CANCEL_RESULTS/train.json" 2>/dev/null || echo none)
$C eval --run "$RUN" --limit 32 --k 1 2>"$CANCEL_RESULTS/evalrun.err" | tail -1 > "$CANCEL_RESULTS/evalrun.json" || true

python - "$T0" <<'PY'
import json, os, sys, time
from pathlib import Path
R = Path(os.environ["CANCEL_RESULTS"])
def load(name):
    try:
        return json.loads((R / f"{name}.json").read_text())
    except Exception:
        err = (R / f"{name}.err").read_text().strip().splitlines() if (R / f"{name}.err").exists() else []
        return {"status": "no output", "summary": {}, "error": err[-1] if err else "?"}
checks = []
tr = load("train")
ok = tr["status"] == "done"
detail = tr.get("error", "")
if ok:
    from cancel_cli.store import Store
    run = Store(R).get(tr["id"])
    m = run.read_table("metrics")
    ok = (len(m) == 3 and (m.groups_split_frac == 0).all() and (m.pos_tokens > 0).all() and (m.neg_tokens > 0).all()
          and os.environ["DEVICE"] in str(run.meta.get("device")))
    detail = (f"3 steps on {run.meta.get('device')}: reward {m.reward.round(3).tolist()}, groups_split_frac "
              f"{m.groups_split_frac.tolist()}, pos/neg tokens {m.pos_tokens.tolist()}/{m.neg_tokens.tolist()}, "
              f"rb_utilization {m.rb_utilization.round(3).tolist() if 'rb_utilization' in m else '-'}, "
              f"flip_rate {m.flip_rate.round(3).tolist()}")
checks.append(("train torch QB+RB 3 steps", ok, detail))
mc = load("mc")
checks.append(("mc-value small M", mc["status"] == "done", mc.get("error") or json.dumps(mc["summary"], default=float)[:300]))
ev = load("eval")
avg = ev["summary"].get("average", float("nan"))
checks.append(("eval toy sets", ev["status"] == "done" and 0.1 <= avg <= 1.0, f"average {avg:.3f} {ev.get('error', '')}"))
er = load("evalrun")
checks.append(("eval --run (train checkpoint)", er["status"] == "done", er.get("error") or f"average {er['summary'].get('average')}"))
secs = time.time() - float(sys.argv[1])
checks.append(("under 6 minutes", secs < 360, f"{secs:.0f} s"))
for name, ok, d in checks:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {d}")
sys.exit(0 if all(ok for _, ok, _ in checks) else 1)
PY
