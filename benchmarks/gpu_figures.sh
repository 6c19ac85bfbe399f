#!/usr/bin/env bash
# The GPU figures issue 12 still needs, in one prepared run (about 7 minutes on an H100), for a
# session that has a GPU: pipeline efficiency of d2vpr and cricavpr at batch 64 in fp32 and bf16
# (PIL decoding in loader threads, in loader processes, and decoding on the GPU), each with the
# breakdown of where the main thread's time went; then exact search on the GPU against faiss on the
# CPU, with the share of queries whose top-10 agree. (torch.compile on the GPU was measured on
# 2026-11-26: README.) Each step runs even if an earlier one failed.
# Not yet measured on a GPU: the writer thread (device waits and shard writes off the main thread),
# the final .h5 filled as batches are written, uint8 batches normalised on the device, and loader
# processes. First, loader_gil.py shows on the host's CPUs how much 15 loader threads (the CUDA
# default) slow the thread that queues the forward pass, against 15 loader processes, and how many
# images/s each feeds at most (on 2 CPUs the threads' cost grew from 1.03-1.20x with 1 worker to
# 1.81-1.87x with 4, paired against processes). Processes are the CUDA default on that evidence
# alone: if threads beat them end to end here, make threads the default again
# (extract.default_loader) and say so in README. Both loaders run with the default number of
# workers (15 on 16 CPUs) and with 8: DataLoader processes did worse with 15 than with 8 in the
# first H100 run, when the main thread still wrote shards; if 8 wins now, lower default_workers.
#   bash benchmarks/gpu_figures.sh 2>&1 | tee gpu_figures.txt
set -uo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
python benchmarks/loader_gil.py --workers 15 --images 512 --seconds 2 --repeats 3
python benchmarks/extract_pipeline.py --device cuda --model d2vpr,cricavpr --batch 64 \
  --dtype fp32,bf16 --images 1536 --workers auto,8 --decode pil,device --loader threads,processes \
  --repeats 2
python benchmarks/search_memory.py --cuda --modes "chunked faiss,chunked torch cuda" \
  --database 100000 --queries 1000
