#!/usr/bin/env bash
# The fine-tuning table (issues #17, #30): six labelled sets x three seeds x the protocol's systems
# (model = the pretrained backbone fine-tuned, lpft, lora, scratch, cnn, probe, kmer_lr), every
# trained system under one BUDGET (the protocol's --budget: time:MINUTES, epochs:N or flops:X).
#
#   bash benchmarks/finetune_benchmark.sh            # OUT=runs/finetune_benchmark BUDGET=time:4 BACKBONE=default
#   BUDGET=epochs:3 OUT=runs/ft_epochs3 bash benchmarks/finetune_benchmark.sh   # equal epochs
#   python benchmarks/finetune_table.py OUT          # the markdown table for RESULTS.md
#
# On a 2-core machine, two single-threaded streams side by side, one per core (each set's
# protocol call runs all of its systems in its stream; a rerun skips finished runs):
#   THREADS=1 SETS="splice_sites_chr20 uci_splice_60bp ecoli_promoters" taskset -c 0 bash benchmarks/finetune_benchmark.sh &
#   THREADS=1 SETS="promoter_tss_chr20 enhancers_iEnhancer2L core_promoters_70bp" taskset -c 1 bash benchmarks/finetune_benchmark.sh &
# SYSTEMS="model probe" runs only those (default: all). EXTRA="--model.pooling mean" passes options
# to every protocol call (e.g. an earlier recipe's pooling, to compare with a table made with it). With a new default model, rerunning into
# a copy of an earlier OUT redoes only the runs that rest on the backbone (the protocol compares the
# backbone's weights and architecture with those results.json records) and keeps cnn and kmer_lr.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/finetune_benchmark}
BUDGET=${BUDGET:-time:4}
SEEDS=${SEEDS:-0 1 2}
BACKBONE=${BACKBONE:-default}
SYSTEMS=${SYSTEMS:-}
EXTRA=${EXTRA:-}
SETS=${SETS:-promoter_tss_chr20 enhancers_iEnhancer2L uci_splice_60bp splice_sites_chr20 core_promoters_70bp ecoli_promoters}
if [ -n "${THREADS:-}" ]; then  # torch's intra-op threads (default: one per core)
  export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
fi
quiet=(--trainer.enable_progress_bar false --trainer.enable_model_summary false)

for set in $SETS; do
  echo "== $set ($(date -u +%H:%M:%S))"
  # shellcheck disable=SC2086
  python -m hnet_dna.finetune --config "pipelines/finetune/$set.yaml" --model.backbone "$BACKBONE" --seeds $SEEDS \
    --out "$OUT/$set" --budget "$BUDGET" ${SYSTEMS:+--systems $SYSTEMS} "${quiet[@]}" $EXTRA
done
echo "== done ($(date -u +%H:%M:%S))"
