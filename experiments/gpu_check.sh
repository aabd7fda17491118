#!/usr/bin/env bash
# One-shot check on a lent GPU machine (one H100, the image's python3 with torch + CUDA, no network).
# The packages the image lacks travel as wheels in .whl/ (git-ignored; carry it: carry=[".whl"]).
#
#   bash experiments/gpu_check.sh                 # logs under $OUT when set, else runs/gpu_check/
#
# Steps (each under its own `timeout`; a failing step does not stop the later ones):
#   1. install .whl/*.whl into /tmp/site (PYTHONPATH=/tmp/site:$PWD); versions, CUDA device, imports
#   2. the CUDA tests: pytest -m gpu, then tests whose ids name cuda but lack the gpu marker
#   3. the default experiment on the GPU (must print the report card); report -> default_report.json
#   4. experiments/gpu_bench.sh (our learner vs plain loop vs Avalanche) -> gpu.json
#   5. if time is left: fast test files that use device=auto, so they run on CUDA there
# Expected ~4 minutes. A global budget (GPU_CHECK_BUDGET, default 400 s) clamps each step's timeout,
# so the whole script stays inside a 450 s call even when a step hangs; later steps are then skipped.
# Env: PYTHON (default python3), WHEELS (default .whl), OUT, GPU_CHECK_BUDGET.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY="${PYTHON:-python3}"
WHEELS="${WHEELS:-.whl}"
BUDGET="${GPU_CHECK_BUDGET:-400}"
LOG="${OUT:-runs/gpu_check}"
mkdir -p "$LOG" && LOG=$(cd "$LOG" && pwd)
export PYTHONUNBUFFERED=1 WANDB_SILENT=true PYTHONDONTWRITEBYTECODE=1
SECONDS=0
SUMMARY=()

header() { printf '\n==================== %s ====================\n' "$*"; }

# The step's timeout: its own cap, or what is left of the budget (less a margin), whichever is smaller.
clamp() {
    local cap=$1 left=$(( BUDGET - SECONDS - 5 ))
    (( left < cap )) && cap=$left
    echo "$cap"
}

record() { SUMMARY+=("$(printf '%-26s %-34s %4ss' "$1" "$2" "$3")"); }

# run_step NAME CAP_SECONDS CMD...: runs CMD under timeout, output to the console and $LOG/NAME.log.
# Sets STEP_RC (124/137: timed out; 200: skipped for lack of budget).
run_step() {
    local name=$1 cap=$2 t t0 rc
    shift 2
    t=$(clamp "$cap")
    header "$name (timeout ${t}s, ${SECONDS}s elapsed)"
    if (( t < 10 )); then
        echo "SKIPPED: the time budget (${BUDGET}s) is spent"
        record "$name" "SKIPPED (budget)" 0
        STEP_RC=200 STEP_S=0
        return
    fi
    t0=$SECONDS
    timeout --kill-after=10 "$t" "$@" 2>&1 | tee "$LOG/$name.log"
    rc=${PIPESTATUS[0]}
    STEP_RC=$rc STEP_S=$(( SECONDS - t0 ))
    case $rc in
        0) record "$name" "PASS" "$STEP_S" ;;
        124|137) record "$name" "TIMEOUT after ${t}s" "$STEP_S" ;;
        *) record "$name" "FAIL (rc $rc)" "$STEP_S" ;;
    esac
    echo "-- $name: rc $rc in ${STEP_S}s"
}

# pytest's exit status 5 means "no tests selected": not a failure here.
fix_no_tests() {
    if [[ $STEP_RC == 5 ]]; then
        unset 'SUMMARY[-1]'
        record "$1" "NONE (no tests selected)" "$STEP_S"
    fi
}

header "gpu_check: $(date -u +%FT%TZ) in $ROOT, logs in $LOG, budget ${BUDGET}s"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
git log --oneline -1 2>/dev/null || true

# ---------------------------------------------------------------- 1. packages, device, imports
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels ($(du -sh "$WHEELS" | cut -f1)) into /tmp/site"
    run_step 1a_install 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --disable-pip-version-check --upgrade --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/site:$ROOT"
else
    header "1a_install"
    echo "no wheels in $WHEELS: using the interpreter's own packages"
    record 1a_install "SKIPPED (no wheels)" 0
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "PYTHONPATH=$PYTHONPATH"

run_step 1b_versions_imports 90 "$PY" - <<'EOF'
import importlib, platform, sys, time, traceback
print("python", sys.version.split()[0], sys.executable, platform.machine())
import torch
print("torch", torch.__version__, "| CUDA build", torch.version.cuda, "| cudnn", torch.backends.cudnn.version())
ok = torch.cuda.is_available()
print("cuda available", ok, "| devices", torch.cuda.device_count())
failed = []
if ok:
    p = torch.cuda.get_device_properties(0)
    print("device 0:", torch.cuda.get_device_name(0), "| capability", torch.cuda.get_device_capability(0),
          f"| {p.total_memory / 2**30:.1f} GiB")
    x = torch.randn(4096, 4096, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = x @ x
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = x @ x
    torch.cuda.synchronize()
    print(f"bf16 matmul 4096^3: {20 * 2 * 4096**3 / (time.perf_counter() - t) / 1e12:.0f} TFLOP/s", y.dtype)
else:
    failed.append("cuda")
from importlib import metadata
for dist in ["numpy", "protobuf", "typing-extensions", "pydantic", "pydantic-core", "pyyaml", "matplotlib",
             "scipy", "torchvision", "torchmetrics", "hypothesis", "pytest"]:
    try:
        d = metadata.distribution(dist)
        print(f"  {dist:20s} {d.version:12s} {d.locate_file('')}")
    except Exception as e:  # noqa: BLE001
        print(f"  {dist:20s} MISSING {e!r}")
mods = ["omegaconf", "hydra", "hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_submitit_launcher",
        "wandb", "avalanche", "avalanche.training", "avalanche.benchmarks",
        "continual", "continual.experiment", "continual.avalanche_compat", "continual.logging.wandb_logger"]
for name in mods:
    t = time.perf_counter()
    try:
        m = importlib.import_module(name)
        print(f"OK   {name:40s} {getattr(m, '__version__', ''):10s} {time.perf_counter() - t:5.1f}s  {getattr(m, '__file__', '')}")
    except Exception as e:  # noqa: BLE001
        failed.append(name)
        print(f"FAIL {name:40s} {type(e).__name__}: {e}")
        traceback.print_exc(limit=3)
try:  # what the default experiment does with W&B, without a server
    import tempfile, wandb
    with tempfile.TemporaryDirectory() as d:
        run = wandb.init(mode="offline", dir=d, project="gpu-check")
        run.log({"x": 1.0})
        run.finish()
    print("OK   wandb.init(mode='offline') + log + finish")
except Exception as e:  # noqa: BLE001
    failed.append("wandb.init")
    print(f"FAIL wandb.init(mode='offline'): {type(e).__name__}: {e}")
print("import failures:", failed or "none")
sys.exit(1 if failed else 0)
EOF

# ---------------------------------------------------------------- 2. CUDA tests
run_step 2a_pytest_gpu_marked 150 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
fix_no_tests 2a_pytest_gpu_marked
# Tests parametrised over the device whose cuda case lacks the gpu marker (ids naming cuda).
run_step 2b_pytest_cuda_ids 60 "$PY" -m pytest -q -x -k cuda -m "not gpu" tests/ -p no:cacheprovider
fix_no_tests 2b_pytest_cuda_ids

# ---------------------------------------------------------------- 3. the default experiment on the GPU
rm -rf "$LOG/default_run"
run_step 3_default_experiment 120 env WANDB_MODE=offline "$PY" experiments/train.py \
    device=cuda progress=false "hydra.run.dir=$LOG/default_run"
if [[ $STEP_RC != 200 ]]; then
    if [[ -f $LOG/default_run/report.json ]]; then
        cp "$LOG/default_run/report.json" "$LOG/default_report.json" && echo "copied report.json -> $LOG/default_report.json"
    else
        echo "NO report.json in $LOG/default_run"
    fi
    if ! grep -q "REPORT CARD" "$LOG/3_default_experiment.log"; then
        echo "NO report card printed"
        [[ $STEP_RC == 0 ]] && { unset 'SUMMARY[-1]'; record 3_default_experiment "FAIL (no report card)" "$STEP_S"; }
    fi
    find "$LOG/default_run" -name '*.pt' -size +20M -print -delete 2>/dev/null  # keep what comes back small
fi

# ---------------------------------------------------------------- 4. the GPU benchmark
# gpu_bench.sh has its own 170 s limit; this one only matters when the budget is short.
run_step 4_gpu_bench 180 env PYTHON="$PY" bash experiments/gpu_bench.sh --out "$LOG/gpu.json"
[[ -f $LOG/gpu.json ]] && echo "gpu.json written: $LOG/gpu.json" || echo "NO gpu.json"

# ---------------------------------------------------------------- 5. extra, with what time is left
# These test files compose configs with device=auto, so on this machine they train on CUDA; they also
# check our code against the image's Python and torch versions.
if (( BUDGET - SECONDS >= 45 )); then
    run_step 5_pytest_device_auto 120 "$PY" -m pytest -q -p no:cacheprovider \
        tests/test_end_to_end.py tests/test_wandb_logger.py tests/test_stream.py tests/test_config.py
else
    header "5_pytest_device_auto"; echo "SKIPPED: under 45 s of the budget left"
    record 5_pytest_device_auto "SKIPPED (budget)" 0
fi

# ---------------------------------------------------------------- summary
header "SUMMARY (${SECONDS}s in all)"
printf '%s\n' "${SUMMARY[@]}" | tee "$LOG/summary.txt"
ls -la "$LOG"
if printf '%s\n' "${SUMMARY[@]}" | grep -qE ' (FAIL|TIMEOUT)'; then exit 1; fi
exit 0
