#!/usr/bin/env bash
# Every GPU figure issue 12 asks for, in one prepared run (about 6 minutes on an H100), for a session
# that has a GPU: pipeline efficiency (PIL decoding in the workers, and decoding on the GPU) and
# extraction throughput of d2vpr and cricavpr at batch 64 in fp32 and bf16, exact search on the GPU
# against faiss on the CPU, and torch.compile. Each step runs even if an earlier one failed.
#   bash benchmarks/gpu_figures.sh 2>&1 | tee gpu_figures.txt
set -uo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
python benchmarks/extract_pipeline.py --device cuda --model d2vpr,cricavpr --batch 64 \
  --dtype fp32,bf16 --images 1024 --workers auto,15 --decode pil,device --repeats 2
python benchmarks/search_memory.py --cuda --modes "chunked faiss,chunked torch cuda" \
  --database 100000 --queries 1000
timeout 240 python benchmarks/compile.py --device cuda --model d2vpr --batch 64 --repeats 20
