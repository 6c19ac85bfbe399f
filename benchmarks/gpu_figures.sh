#!/usr/bin/env bash
# The GPU figures issue 12 still needs, in one prepared run (about 6 minutes on an H100), for a
# session that has a GPU: pipeline efficiency of d2vpr and cricavpr at batch 64 in fp32 and bf16
# (PIL decoding in the loader threads, and decoding on the GPU), each with the breakdown of where
# the main thread's time went, on 8,192 images so that per-run costs weigh less; then exact search
# on the GPU against faiss on the CPU, with the share of queries whose top-10 agree. (torch.compile
# on the GPU was measured on 2026-11-26: README.) Each step runs even if an earlier one failed.
# Not yet measured on a GPU: the writer thread (device waits and shard writes off the main thread),
# the final .h5 filled as batches are written, and uint8 batches normalised on the device; the
# breakdown shows whether "writer_wait" or "finalise" still cost the main thread anything.
#   bash benchmarks/gpu_figures.sh 2>&1 | tee gpu_figures.txt
set -uo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
python benchmarks/extract_pipeline.py --device cuda --model d2vpr,cricavpr --batch 64 \
  --dtype fp32,bf16 --images 4096 --workers auto --decode pil,device --repeats 2
python benchmarks/search_memory.py --cuda --modes "chunked faiss,chunked torch cuda" \
  --database 100000 --queries 1000
