#!/usr/bin/env bash
# One prepared run for a lent GPU machine (no network there): install the carried wheels, run the
# GPU tests, then the GPU benchmarks, writing every result under $OUT as soon as it exists.
#
# Prepare here (a machine with network), once per session, from the repo root:
#   echo /.whl/ >> .git/info/exclude; mkdir -p .whl
#   MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE pip wheel --no-deps --no-build-isolation \
#       -w .whl mamba-ssm==2.3.2.post1          # pure-Python wheel: the Triton kernels only
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl jsonargparse docstring-parser typeshed-client pyfaidx biopython   # not in the GPU image
# For the chr20 runs also carry the genome (18 MB; ../shared does not travel):
#   echo /.data/ >> .git/info/exclude; mkdir -p .data; cp ../shared/data/genomes/GRCh37_chr20.fa.gz* .data/
#   cp ../shared/data/genomes/Ecoli_K12_MG1655.fasta.gz .data/      # data_efficiency's second held-out set
# Then run it through the device tool with carry [".whl", ".data"]:
#   bash benchmarks/gpu_check.sh                     GPU tests + model_speed (~8 min)
#   bash benchmarks/gpu_check.sh chr20 MODEL [STEPS]  one chr20.yaml run (~200 s + start-up)
#   bash benchmarks/gpu_check.sh kernels              Triton chunking kernels: their tests compiled, then
#                                                     benchmarks/kernel_speed.py (<= 7.5 min; DEVELOPERS.md)
#   bash benchmarks/gpu_check.sh data_efficiency      pipelines/benchmarks/gpu.yaml (<= 8 min; also carry
#       .data/Ecoli_K12_MG1655.fasta.gz, and matplotlib in .whl if the image lacks it)
# The GPU image has torch 2.11+cu130, Triton 3.6 and Lightning, but not mamba-ssm.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; git rev-parse --short HEAD; date -u; } > "$OUT/machine.txt" 2>&1

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  # mamba_ssm 2.3.2 imports its selective-scan CUDA extension unconditionally; the pure-Python
  # wheel has none. An empty stand-in lets the Triton SSD kernels (all hnet_dna uses) import.
  # On a user's GPU machine the real extension is installed and this is not needed.
  mkdir -p /tmp/stub && : > /tmp/stub/selective_scan_cuda.py
  export PYTHONPATH="/tmp/site:/tmp/stub:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
python3 -c "from hnet_dna import backends; print('mamba_ssm kernels:', backends.mamba_ssm_ops() is not None)" > "$OUT/backends.txt" 2>&1

what="${1:-default}"
if [ "$what" = default ]; then
  # 1. GPU tests (the CPU suite runs in CI)
  timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -rs > "$OUT/gpu_tests.txt" 2>&1
  echo "gpu tests rc=$?" >> "$OUT/gpu_tests.txt"
  # 2. benchmarks, each table row appended as it is measured
  timeout 300 python3 benchmarks/model_speed.py --device cuda --cap 90 --out "$OUT/model_speed.md" > "$OUT/model_speed.log" 2>&1
  echo "model_speed rc=$?" >> "$OUT/model_speed.log"
elif [ "$what" = chr20 ]; then
  # 3. one chr20 pretraining run (~200 s; one device call per model):
  #    bash benchmarks/gpu_check.sh chr20 dna-hnet-m3t1-t15-m4 | dna-transformer-t9 | dna-mamba2-m10
  model="${2:-dna-hnet-m3t1-t15-m4}"
  mkdir -p /tmp/chr20 && cp .data/GRCh37_chr20.fa.gz* /tmp/chr20/
  extra=(); [ "$model" != dna-hnet-m3t1-t15-m4 ] && extra=(--model.lr 2e-3 --trainer.max_steps "${3:-4200}")
  timeout 420 python3 -m hnet_dna fit --config pipelines/pretrain/chr20.yaml --model.model "$model" \
      --data.fasta /tmp/chr20/GRCh37_chr20.fa.gz --trainer.default_root_dir "$OUT/chr20_$model" \
      --trainer.enable_progress_bar false "${extra[@]}" > "$OUT/chr20_$model.log" 2>&1
  echo "chr20 $model rc=$?" >> "$OUT/chr20_$model.log"
  find "$OUT" -name "*.ckpt" -delete  # checkpoints are too big to bring back
elif [ "$what" = data_efficiency ]; then
  # 4. the data-efficiency pipeline's gpu config: the two paper H-Nets vs T9 vs M10 on chr20, bf16
  #    (750 steps each, <= 8 min: an estimate, never measured yet).
  #    Needs .data/GRCh37_chr20.fa.gz* and .data/Ecoli_K12_MG1655.fasta.gz carried.
  mkdir -p /tmp/de_data && cp .data/GRCh37_chr20.fa.gz* .data/Ecoli_K12_MG1655.fasta.gz /tmp/de_data/
  timeout 480 python3 -m hnet_dna.data_efficiency --config pipelines/benchmarks/gpu.yaml --out /tmp/de_gpu \
      --data.fasta /tmp/de_data/GRCh37_chr20.fa.gz --heldout.ecoli.fasta /tmp/de_data/Ecoli_K12_MG1655.fasta.gz \
      --export_models false > "$OUT/data_efficiency.log" 2>&1
  echo "data_efficiency rc=$?" >> "$OUT/data_efficiency.log"
  # what exists, even after a timeout: the finished summary, else each fit's points so far
  mkdir -p "$OUT/data_efficiency"
  cp /tmp/de_gpu/curves.csv /tmp/de_gpu/curves.png /tmp/de_gpu/summary.json /tmp/de_gpu/plan.json "$OUT/data_efficiency/" 2>/dev/null
  for run in /tmp/de_gpu/runs/*/seed*; do
    name="$(basename "$(dirname "$run")")_$(basename "$run")"
    cp "$run/points.csv" "$OUT/data_efficiency/${name}_points.csv" 2>/dev/null
    cp "$run/result.json" "$OUT/data_efficiency/${name}_result.json" 2>/dev/null
    tail -40 "$run/fit.log" > "$OUT/data_efficiency/${name}_fit.log" 2>/dev/null
  done
elif [ "$what" = kernels ]; then
  # 5. the Triton chunking kernels (issue #11): their tests on the compiled kernels (the CPU suite
  #    runs them under the interpreter), then the benchmark, each row appended as it is measured
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py -rs > "$OUT/kernel_tests.txt" 2>&1
  echo "kernel tests rc=$?" >> "$OUT/kernel_tests.txt"
  timeout 300 python3 benchmarks/kernel_speed.py --cap 50 --sweep-cap 60 --out "$OUT/kernels.md" > "$OUT/kernels.log" 2>&1
  echo "kernels rc=$?" >> "$OUT/kernels.log"
fi
cat "$OUT"/*.txt 2>/dev/null; tail -20 "$OUT"/*.log
