#!/usr/bin/env bash
# The GPU checks in one run (docs/performance.md, "On a GPU"): parity with transformers, cached vs
# uncached decoding and bf16 training steps (benchmarks/device_check.py), the single-process recipe
# tests trained on the GPU (learning, exact resume), torchrun DDP/FSDP through the CLI on NCCL
# (benchmarks/dist_check.py), and the benchmark's quick plan on the GPU.
#   bash scripts/device_check.sh OUT_DIR            (python3 with torch+CUDA and transformers on PATH)
# Each stage has its own time limit, and writes its log under OUT_DIR before the next starts.
set -uo pipefail
out=${1:?usage: scripts/device_check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
$py -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
      'cuda', torch.version.cuda, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
timeout 240 $py -m benchmarks.device_check --device cuda --out "$out" 2>&1 | tee "$out/device_check.log"
# torchrun through the CLI on NCCL: DDP / FSDP pretraining equal one process, a sharded checkpoint resumes
timeout 150 $py -m benchmarks.dist_check --device cuda --nproc 1 --out "$out" 2>&1 | tee "$out/dist_check.log"
# the recipe tests on the GPU (tests/train_device.py); the ones that fetch packages or test only
# argument checking stay on CPU machines
T5ELECTRA_TEST_DEVICE=cuda timeout 180 $py -m pytest -q -p no:cacheprovider -n 4 \
  tests/recipes/test_pretrain_t5.py tests/recipes/test_pretrain_electra.py tests/recipes/test_finetune_t5.py \
  tests/recipes/test_finetune_electra.py -k "not minilm and not bad_setups" 2>&1 | tee "$out/recipes_cuda.log"
timeout 200 $py -m benchmarks --quick --device cuda --cases train,electra_pretrain,generate,electra_infer \
  --no-int8 --output "$out/bench_cuda.md" --img-dir /tmp/bench-img --json "$out/bench_cuda.json" 2>&1 \
  | tail -30 | tee "$out/bench.log"
