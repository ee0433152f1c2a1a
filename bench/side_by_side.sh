#!/usr/bin/env bash
# End-to-end fit time of gru4rec and of the authors' PyTorch code, same file, same parameters.
#
#   bash bench/side_by_side.sh AUTHORS_DIR AUTHORS_PYTHON TRAIN.tsv [EPOCHS] [ROUNDS]
#
# AUTHORS_DIR holds a checkout of hidasib/GRU4Rec_PyTorch_Official (its run.py), fetched by you,
# outside this repository; AUTHORS_PYTHON a Python with torch, numpy<2 and pandas<3 for it.
# Both fit TRAIN.tsv with the published RSC15 cross-entropy parameters (paramfiles/rsc15_xe_authors.txt:
# B=32, 100 units, dropout_p_hidden 0.4, learning_rate 0.2, momentum 0.2, n_sample 2048,
# sample_alpha 0.5, logq 1) for EPOCHS epochs (default 3), on the CPU, without evaluation. Timed:
# the whole command (start-up, data loading, compilation or sample store, the epochs).
# Each of ROUNDS rounds (default 1) runs gru4rec with an empty compilation cache (cold), then with
# it filled (warm), then the authors' code, then gru4rec warm again; the ratios of a round compare
# runs taken minutes apart, and the summary gives each column's median over the rounds, and its
# fastest run (the least disturbed one where outside load comes in bursts).
set -euo pipefail
if [[ $# -lt 3 ]]; then sed -n 2,15p "$0"; exit 2; fi
AUTHORS_DIR=$1 AUTHORS_PY=$2 TRAIN=$3 EPOCHS=${4:-3} ROUNDS=${5:-1}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PS="loss=cross-entropy,constrained_embedding=True,layers=100,batch_size=32,dropout_p_embed=0.0,dropout_p_hidden=0.4"
PS="$PS,learning_rate=0.2,momentum=0.2,n_sample=2048,sample_alpha=0.5,logq=1.0,n_epochs=$EPOCHS"

seconds() {  # run a command quietly, print its wall time in seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > "$WORK/last.log" 2>&1 || { cat "$WORK/last.log"; exit 1; }
  t1=$(date +%s.%N)
  python -c "print(f'{$t1 - $t0:.1f}')"
}

echo "side by side: $TRAIN, $EPOCHS epochs, $ROUNDS round(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
: > "$WORK/rounds"
for round in $(seq "$ROUNDS"); do
  cache="$WORK/jax-$round"
  ours=(env GRU4REC_COMPILATION_CACHE="$cache" gru4rec "$TRAIN" -pf rsc15_xe_authors -ps "n_epochs=$EPOCHS" -q)
  cold=$(seconds "${ours[@]}")
  warm=$(seconds "${ours[@]}")
  theirs=$(cd "$AUTHORS_DIR" && seconds "$AUTHORS_PY" run.py "$TRAIN" -ps "$PS" -d cpu)
  grep -E "^Epoch|Total training" "$WORK/last.log" | sed "s/^/  round $round, authors: /"
  warm2=$(seconds "${ours[@]}")
  echo "$theirs $cold $warm $warm2" >> "$WORK/rounds"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python - "$WORK/rounds" <<'EOF'
import statistics
import sys

rows = [tuple(map(float, line.split())) for line in open(sys.argv[1])]
for i, (theirs, cold, warm, warm2) in enumerate(rows, 1):
    best_warm = min(warm, warm2)
    print(f"  round {i}: authors' PyTorch {theirs:6.1f} s | gru4rec cold {cold:5.1f} s ({theirs / cold:4.2f}x) | "
          f"warm {warm:5.1f} s, {warm2:5.1f} s ({theirs / best_warm:4.2f}x, the faster of the two)")
if len(rows) > 1:
    med = [statistics.median(col) for col in zip(*rows)]
    print(f"  medians: authors' PyTorch {med[0]:.1f} s, gru4rec cold {med[1]:.1f} s, warm {min(med[2], med[3]):.1f} s;"
          f" ratios of the medians {med[0] / med[1]:.2f}x cold, {med[0] / min(med[2], med[3]):.2f}x warm")
    best = [min(col) for col in zip(*rows)]  # the least disturbed run of each program on a noisy machine
    print(f"  fastest: authors' PyTorch {best[0]:.1f} s, gru4rec cold {best[1]:.1f} s, warm {min(best[2], best[3]):.1f} s;"
          f" ratios of the fastest {best[0] / best[1]:.2f}x cold, {best[0] / min(best[2], best[3]):.2f}x warm")
EOF
