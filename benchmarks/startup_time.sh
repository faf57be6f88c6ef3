#!/usr/bin/env bash
# Process start as the subprocess tests pay it, for two source trees side by side (e.g. a `git worktree` of an
# older commit and this checkout), alternating, REPEATS times: `probclr --help`, a 1-epoch tiny digits
# pretrain (1 thread) and its evaluation (linear + kNN, 2 fractions x 2 label subsets). Wall seconds per
# process; run it with nothing else on the CPU.
#   [PYTHON=.venv/bin/python] bash benchmarks/startup_time.sh TREE_A TREE_B [REPEATS=3]
set -euo pipefail
a=$(cd "${1:?TREE_A}" && pwd); b=$(cd "${2:?TREE_B}" && pwd); repeats=${3:-3}; py=${PYTHON:-python}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$work"  # python -m puts the working directory first on sys.path: no tree may be it
secs() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; "$py" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$s" "$(date +%s.%N)"; }
for r in $(seq 1 "$repeats"); do
  for tree in "$a" "$b"; do
    run="$work/run"; rm -rf "$run"
    export PYTHONPATH=$tree
    h=$(secs "$py" -m cli.main --help)
    p=$(secs "$py" -m cli.main pretrain --batch-size 64 --set "model.convnet_widths=[8, 16]" --set optim.warmup_epochs=0 \
      --set model.proj_dim=16 --set run.num_threads=1 --epochs 1 --out "$run")
    e=$(secs "$py" -m cli.main evaluate --run "$run" --fraction 0.1 --fraction 1.0 --seeds 2 --probe linear --probe knn \
      --set "eval.weight_decays=[1e-4]" --set eval.max_iter=50)
    echo "$tree repeat $r: help $h s, pretrain $p s, evaluate $e s"
  done
done
