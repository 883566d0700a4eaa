#!/usr/bin/env bash
# The fine-tuning table (issue #8): three labelled sets x three seeds x five systems.
#
#   bash benchmarks/finetune_benchmark.sh            # OUT=runs/finetune_benchmark CAP=00:00:04:00
#   CAP=00:00:01:00 OUT=/tmp/ft bash benchmarks/finetune_benchmark.sh
#   python benchmarks/finetune_table.py OUT          # the markdown table for RESULTS.md
#
# On a 2-core machine the fine-tunes can run as two single-threaded streams side by side (each
# system's protocol calls in their own stream; pretraining must be finished first):
#   THREADS=1 SYSTEMS="hnet_scratch tiny-hnet" taskset -c 0 bash benchmarks/finetune_benchmark.sh &
#   THREADS=1 SYSTEMS="tiny-transformer tiny-mamba2" taskset -c 1 bash benchmarks/finetune_benchmark.sh &
#
# Systems: tiny H-Net pretrained on chr20 below 50 Mb then fine-tuned; the same H-Net from scratch;
# tiny Transformer and tiny Mamba-2 pretrained with the same data and budget, fine-tuned; the
# k-mer logistic regression (run by every protocol call, on the same splits). Every fine-tune is
# capped at CAP of wall time (--trainer.max_time). Finished pieces are skipped on a rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/finetune_benchmark}
CAP=${CAP:-00:00:04:00}
SEEDS=${SEEDS:-0 1 2}
SETS=${SETS:-promoter_tss_chr20 enhancers_iEnhancer2L uci_splice_60bp}
SYSTEMS=${SYSTEMS:-hnet_scratch tiny-hnet tiny-transformer tiny-mamba2}
if [ -n "${THREADS:-}" ]; then  # torch's intra-op threads (default: one per core)
  export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
fi
quiet=(--trainer.enable_progress_bar false --trainer.enable_model_summary false)

for model in tiny-hnet tiny-transformer tiny-mamba2; do
  root="$OUT/pretrain/$model"
  if ! ls "$root"/lightning_logs/version_*/pretrained/model.safetensors >/dev/null 2>&1; then
    echo "== pretraining $model ($(date -u +%H:%M:%S))"
    python -m hnet_dna fit --config pipelines/pretrain/chr20_below_50mb_cpu.yaml --model.model "$model" \
      --trainer.default_root_dir "$root" "${quiet[@]}"
  fi
done

for set in $SETS; do
  for system in $SYSTEMS; do
    backbone=()
    if [ "$system" != hnet_scratch ]; then
      backbone=(--model.backbone "$(ls -d "$OUT"/pretrain/"$system"/lightning_logs/version_*/pretrained | tail -1)")
    fi
    echo "== $set / $system ($(date -u +%H:%M:%S))"
    # shellcheck disable=SC2086
    python -m hnet_dna.finetune --config "pipelines/finetune/$set.yaml" --seeds $SEEDS --out "$OUT/$set/$system" \
      "${backbone[@]}" --trainer.max_time "$CAP" "${quiet[@]}"
  done
done
