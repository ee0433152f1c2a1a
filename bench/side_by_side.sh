#!/usr/bin/env bash
# End-to-end fit time of gru4rec and of the authors' PyTorch code, same file, same parameters, one run.
#
#   bash bench/side_by_side.sh AUTHORS_DIR AUTHORS_PYTHON TRAIN.tsv [EPOCHS]
#
# AUTHORS_DIR holds a checkout of hidasib/GRU4Rec_PyTorch_Official (its run.py), fetched by you,
# outside this repository; AUTHORS_PYTHON a Python with torch, numpy<2 and pandas<3 for it.
# Both fit TRAIN.tsv with the published RSC15 cross-entropy parameters (paramfiles/rsc15_xe_authors.txt:
# B=32, 100 units, dropout_p_hidden 0.4, learning_rate 0.2, momentum 0.2, n_sample 2048,
# sample_alpha 0.5, logq 1) for EPOCHS epochs (default 3), on the CPU, without evaluation. Timed:
# the whole command (start-up, data loading, compilation or sample store, the epochs).
# gru4rec runs three times: with an empty compilation cache (cold), then twice with it filled (warm).
set -euo pipefail
if [[ $# -lt 3 ]]; then sed -n 2,12p "$0"; exit 2; fi
AUTHORS_DIR=$1 AUTHORS_PY=$2 TRAIN=$3 EPOCHS=${4:-3}
CACHE=$(mktemp -d)
trap 'rm -rf "$CACHE"' EXIT
PS="loss=cross-entropy,constrained_embedding=True,layers=100,batch_size=32,dropout_p_embed=0.0,dropout_p_hidden=0.4"
PS="$PS,learning_rate=0.2,momentum=0.2,n_sample=2048,sample_alpha=0.5,logq=1.0,n_epochs=$EPOCHS"

seconds() {  # run a command quietly, print its wall time in seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > "$CACHE/last.log" 2>&1 || { cat "$CACHE/last.log"; exit 1; }
  t1=$(date +%s.%N)
  python -c "print(f'{$t1 - $t0:.1f}')"
}

echo "side by side: $TRAIN, $EPOCHS epochs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
ours=(env GRU4REC_COMPILATION_CACHE="$CACHE/jax" gru4rec "$TRAIN" -pf rsc15_xe_authors -ps "n_epochs=$EPOCHS" -q)
cold=$(seconds "${ours[@]}")
warm=$(seconds "${ours[@]}")
theirs=$(cd "$AUTHORS_DIR" && seconds "$AUTHORS_PY" run.py "$TRAIN" -ps "$PS" -d cpu)
grep -E "^Epoch|Total training" "$CACHE/last.log" | sed 's/^/  authors: /'
warm2=$(seconds "${ours[@]}")
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python - "$theirs" "$cold" "$warm" "$warm2" <<'EOF'
import sys
theirs, cold, warm, warm2 = map(float, sys.argv[1:])
best_warm = min(warm, warm2)
print(f"  authors' PyTorch {theirs:7.1f} s")
print(f"  gru4rec cold     {cold:7.1f} s   {theirs / cold:4.2f}x")
print(f"  gru4rec warm     {warm:7.1f} s, {warm2:.1f} s   {theirs / best_warm:4.2f}x (faster of the two)")
EOF
