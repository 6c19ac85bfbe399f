"""vprbench: a benchmarking and ablation suite for Visual Place Recognition."""

__version__ = "0.1.0"
