#!/usr/bin/env bash
# GPU readiness (issue #15): the default study (params.yaml's sweep, 20 runs, 10 epochs) trained stacked on one
# GPU (hydra/launcher=stacked, one worker: the members share the device; data resident on it, as always), then
# one of its runs alone, and whether that member is its single run. Timings and that comparison go to
# OUT/gpu_check.json; the runs stay in OUT/study/ (a throw-away copy of the study's configs, its data linked).
#
#   benchmarks/gpu_check.sh OUT                                   # on the GPU
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_TINY=1 benchmarks/gpu_check.sh OUT   # on the CPU, tiny (what the test runs)
#
# Environment: GPU_CHECK_DEVICE gpu (default) or cpu; GPU_CHECK_TINY=1: 2 initializers x 2 seeds, 1 epoch, 256
# training images; GPU_CHECK_ROOT: the study whose configs and data/raw/MNIST/raw are used (default: this
# checkout); PYTHON: the interpreter (default: .venv/bin/python, else python). MLflow logging is off (logger=
# offline): this measures training. Exit status: the sweep's.
set -euo pipefail

out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=${GPU_CHECK_ROOT:-$repo}
device=${GPU_CHECK_DEVICE:-gpu}
python=${PYTHON:-$repo/.venv/bin/python}
[[ -x $python ]] || python=python
case $device in
  gpu | cpu) ;;
  *) echo "error: invalid GPU_CHECK_DEVICE=$device: must be gpu or cpu" >&2; exit 2 ;;
esac
[[ -f $root/data/raw/MNIST/raw/train-images-idx3-ubyte ]] || {
  echo "error: no MNIST files in $root/data/raw/MNIST/raw: run \`dvc repro download\` or set GPU_CHECK_ROOT" >&2
  exit 2
}

mkdir -p "$out"
out=$(cd "$out" && pwd)
study=$out/study
rm -rf "$study"
mkdir -p "$study/data/raw/MNIST"
cp -r "$root/params.yaml" "$root/dvc.yaml" "$root/conf" "$study/"
ln -s "$(cd "$root/data/raw/MNIST/raw" && pwd)" "$study/data/raw/MNIST/raw"

overrides=("trainer.accelerator=$device" "logger=offline")
if [[ ${GPU_CHECK_TINY:-0} == 1 ]]; then
  sweep=("init=zeros,he_uniform" "seed=0,1")
  overrides+=("trainer.max_epochs=1" "data.train_size=256" "data.val_size=100")
else
  sweep=()  # params.yaml's: 4 initializers x 5 seeds, 10 epochs
fi

export INITSTUDY_ROOT=$study MLFLOW_DISABLE_TELEMETRY=true
cd "$study"
stacked_start=$EPOCHREALTIME
"$python" -m initstudy.train --multirun hydra/launcher=stacked hydra.launcher.n_jobs=1 "${overrides[@]}" \
  "${sweep[@]}" > "$out/stacked.log" 2>&1
stacked_end=$EPOCHREALTIME

# One member alone, the one-job way: its single run, for the time per run and the bit-for-bit question.
single_start=$EPOCHREALTIME
"$python" -m initstudy.train init=he_uniform seed=0 "${overrides[@]}" "hydra.run.dir=$study/single" \
  > "$out/single.log" 2>&1
single_end=$EPOCHREALTIME

"$python" - "$out" "$device" "$stacked_start" "$stacked_end" "$single_start" "$single_end" <<'EOF'
"""gpu_check.json: the sweep's and the single run's wall times, each run's timing.json, and whether the member
he_uniform/seed_0 is its single run (metrics.json bytes; largest weight difference)."""
import json
import platform
import sys
from pathlib import Path

import torch

out, device = Path(sys.argv[1]), sys.argv[2]
stacked_s, single_s = (float(sys.argv[i + 1]) - float(sys.argv[i]) for i in (3, 5))
runs = out / "study" / "runs"
timings = {str(p.parent.relative_to(runs)): json.loads(p.read_text()) for p in sorted(runs.glob("*/seed_*/timing.json"))}
member, single = runs / "he_uniform" / "seed_0", out / "study" / "single"


def largest_difference(name: str) -> float:
    a, b = (torch.load(folder / name, map_location="cpu") for folder in (member, single))
    return max(float((a[key].double() - b[key].double()).abs().max()) for key in a)


first = next(iter(timings.values()))
result = {
    "device": device,
    "device_name": torch.cuda.get_device_name(0) if device == "gpu" else platform.processor() or platform.machine(),
    "runs": len(timings),
    "stacked_members": first.get("stacked_members", 1),
    "sweep_wall_seconds": stacked_s,
    "single_run_wall_seconds": single_s,
    "ratio_runs_one_by_one_vs_stacked": len(timings) * single_s / stacked_s,
    "group_fit_seconds": first["fit_seconds"],
    "group_eval_seconds": first["eval_seconds"],
    "single_fit_seconds": json.loads((single / "timing.json").read_text())["fit_seconds"],
    "member_is_single_run": {
        "metrics_json_identical": (member / "metrics.json").read_bytes() == (single / "metrics.json").read_bytes(),
        "history_csv_identical": (member / "history.csv").read_bytes() == (single / "history.csv").read_bytes(),
        "weights_final_max_abs_difference": largest_difference("weights_final.pt"),
    },
    "timings": timings,
    "torch": torch.__version__,
}
(out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
print(f"{result['runs']} runs stacked on {result['device_name']}: {stacked_s:.1f} s; one run alone {single_s:.1f} s; "
      f"one by one / stacked = {result['ratio_runs_one_by_one_vs_stacked']:.2f}; member == single run: "
      f"{result['member_is_single_run']}")
EOF
