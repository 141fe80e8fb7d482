#!/bin/bash
# The wall time of one checkpoint's evaluation (`python -m gan_lab.evaluate ckpt=CKPT
# device=cpu`): this tree with an empty reference-feature cache (miss) and with the cache the
# miss filled (hit), and, given BEFORE_TREE (e.g. `git archive <commit> | tar -x -C DIR`), that
# tree's code; interleaved, ROUNDS rounds, medians last. docs/benchmarks.md has the results.
#
#   benchmarks/eval_cost.sh CKPT [BEFORE_TREE] [ROUNDS]
set -euo pipefail
ckpt=$(realpath "$1")
before=${2:-}
rounds=${3:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
variants=(miss hit)
[[ -n $before ]] && variants=(before "${variants[@]}")
for round in $(seq "$rounds"); do
  for variant in "${variants[@]}"; do
    tree=$here
    [[ $variant == before ]] && tree=$(realpath "$before")
    [[ $variant == miss ]] && rm -rf "$scratch/cache"
    start=$(date +%s.%N)
    (cd "$tree" && XDG_CACHE_HOME=$scratch/cache PYTHONPATH=$tree \
      "$python" -m gan_lab.evaluate ckpt="$ckpt" device=cpu >/dev/null 2>"$scratch/err") ||
      { cat "$scratch/err"; exit 1; }
    seconds=$(echo "$(date +%s.%N) - $start" | bc)
    echo "$variant $round $seconds" | tee -a "$scratch/times"
  done
done
for variant in "${variants[@]}"; do
  sort -n -k3 <(grep "^$variant " "$scratch/times") |
    awk -v v="$variant" '{t[NR]=$3} END {printf "%s: median %.1f s of %d\n", v, t[int((NR+1)/2)], NR}'
done
