"""vprbench: a benchmarking and ablation suite for Visual Place Recognition.

The packages follow the data flow, each stage cached and a pure function of its inputs and a key:

    datasets/   datasets.yaml (protocols) -> a formatted dataset on disk (images + ground truth)
    models/     the registry and model cards: backbones, adapters, aggregators, the baselines
    extract/    model + preprocessing -> descriptors in the HDF5 cache (resumable, torchrun)
    evaluate/   descriptors -> search -> recall@k with intervals -> a run record (JSON)
    profile/    parameters, FLOPs, latency and memory of a model -> a profile record
    report/     run records and profiles -> pandas -> tables (LaTeX, Markdown, CSV) and figures
    train/      the two D²-VPR stages (distillation, fine-tuning) on GSV-Cities-style data
    ablate/     a recipe (YAML) -> variants -> the stages above, for each
    cli/        the command line: one module per command group, thin
"""

__version__ = "0.1.0"
