#!/usr/bin/env bash
# Same behaviour across a refactor: the first epoch of the CPU config (12,800 images, seed 0, monitor off) with
# NT-Xent and --new-loss, for two commits checked out as git worktrees; prints epoch-1 loss, lr, kappa median.
#   PROBCLR_DATA_DIR=../shared/data bash benchmarks/same_behaviour.sh OLD_REV NEW_REV [OUT_DIR]
set -euo pipefail
old=$1 new=$2 out=$(realpath -m "${3:-runs/same}")  # absolute, wherever it was given
root=$(git rev-parse --show-toplevel)
cd "$root"
for rev in "$old" "$new"; do
  tree="$out/tree-$rev"
  [ -d "$tree" ] || git -C "$root" worktree add -f "$tree" "$rev" -q --detach
  for loss in "" "--new-loss"; do
    run="$out/run-$rev${loss:+-prob}"
    rm -rf "$run"
    (cd "$tree" && PYTHONPATH="$PWD" probclr pretrain --config configs/cifar10_cpu_narrow.yaml $loss --epochs 1 \
      --set data.train_limit=12800 --set run.monitor_every=0 --seed 0 --out "$run" >/dev/null 2>&1)
    python3 -c "import json,sys; d=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(sys.argv[2], repr(d['loss']), d['lr'], d.get('kappa_q50'))" \
      "$run/metrics.jsonl" "$rev${loss:+ --new-loss}"
  done
done
