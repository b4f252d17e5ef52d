#!/usr/bin/env bash
# GPU smoke check (issue 20), for a machine with one or more NVIDIA GPUs and lccore installed:
#   bash benchmarks/gpu_smoke.sh            # about 5 minutes on one H100
# 1. one process: bf16 and fp16 training of MiniLM-L6 and a BERT-base-sized model (tokens/s, MFU);
# 2. FSDP2 (examples/distributed/fsdp2.yaml) over every GPU there is, bf16, the BERT-base-sized model.
# Results: printed, and appended to benchmarks/out/gpu_smoke.jsonl; copy the table into benchmarks/README.md.
# Untested until it has run on such a machine (docs/runs.md, "On GPUs").
# GPU_SMOKE_CPU=1 runs both parts on the CPU with a few small steps (2 CPU processes for FSDP2),
# to check the script itself; those figures mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p benchmarks/out
out=benchmarks/out/gpu_smoke.jsonl
if [ "${GPU_SMOKE_CPU:-0}" = 1 ]; then
    check=(--cpu-check) processes=2
else
    check=() processes=$(python -c "import torch; print(torch.cuda.device_count())")
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
python -c "import torch, transformers, accelerate, lccore; print('torch', torch.__version__, '| transformers', transformers.__version__, '| accelerate', accelerate.__version__, '| lccore', lccore.__version__)"

echo "== one process"
python benchmarks/gpu_smoke.py "${check[@]}" --json "$out"

echo "== FSDP2 over $processes process(es)"
python -m accelerate.commands.launch --config_file examples/distributed/fsdp2.yaml --num_processes "$processes" \
    benchmarks/gpu_smoke.py "${check[@]}" --models base --precisions bf16 --json "$out"
