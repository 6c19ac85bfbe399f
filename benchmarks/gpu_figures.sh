#!/usr/bin/env bash
# Every GPU figure issue 12 asks for, in one prepared run (about 8 minutes on an H100), for a session
# that has a GPU: pipeline efficiency and extraction throughput of d2vpr and cricavpr at batch 64 in
# fp32 and bf16, torch.compile, and exact search on the GPU against faiss on the CPU.
#   bash benchmarks/gpu_figures.sh 2>&1 | tee gpu_figures.txt
set -euo pipefail
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for model in d2vpr cricavpr; do
  for dtype in fp32 bf16; do
    python benchmarks/extract_pipeline.py --device cuda --model "$model" --batch 64 --dtype "$dtype" \
      --images 1024 --workers auto,0 --repeats 2
  done
done
python benchmarks/compile.py --device cuda --model d2vpr --batch 64
python benchmarks/compile.py --device cuda --model d2vpr --batch 64 --dtype bf16
python benchmarks/search_memory.py --cuda --database 100000 --queries 1000
