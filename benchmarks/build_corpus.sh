#!/usr/bin/env bash
# Grow the broad predictor corpus (issue 10) as Optuna studies, round-robin over
# families and datasets, so that stopping it at any moment leaves balanced records.
# Every study resumes: running the script again continues each one to its next count.
#
#   nice -n 19 bash benchmarks/build_corpus.sh runs/corpus "mnist1d digits" 20 40
#
# args: STORAGE_DIR  DATASETS  STEP  ROUNDS  [FAMILIES]
# The per-trial time caps are generous so that a build starved by other work (it is meant
# to run at nice 19 beside it) still trains its candidates to the end.
# Export afterwards with `einnas bench export` (see benchmarks/data/corpus/README.md).
set -u
dir=${1:-runs/corpus}
datasets=${2:-"mnist1d digits"}
step=${3:-20}
rounds=${4:-40}
families=${5:-"cnn resnet mobilenet transformer mlp einspace_extra"}
mkdir -p "$dir"
for round in $(seq 1 "$rounds"); do
  for ds in $datasets; do
    case $ds in
      mnist5k|addnist5k) seconds=1800 ;;
      *) seconds=900 ;;
    esac
    for fam in $families; do
      # the transformer space cuts 2-D patches: no form for a 1-D signal in either view
      [ "$ds-$fam" = mnist1d-transformer ] && continue
      einnas bench build --grammar "$fam" --dataset "$ds" --trials $((round * step)) --seed 3 \
        --epochs 8 --seconds "$seconds" --max-params 2000000 --max-activations 1000000 \
        --workers 1 --threads 1 -q --storage "$dir/$ds-$fam.journal" \
        || echo "build_corpus: $ds-$fam round $round failed (exit $?)" >&2
    done
  done
  echo "build_corpus: round $round done $(date -u +%FT%TZ)" >&2
done
