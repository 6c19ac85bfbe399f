"""Counting a model: parameters (by module, and those no descriptor uses) and fvcore FLOPs with
handlers for every operator the models use.

fvcore counts one fused multiply-add as one "flop"; vprbench reports that number as MACs and doubles it
for FLOPs, and lists the operators it did not count (element-wise arithmetic, by fvcore's convention).
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

with warnings.catch_warnings():  # fvcore's import touches the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import elementwise_flop_counter, get_shape


_ADAPTER = re.compile(r"^backbone\.blocks\.\d+\.adapter[12]?$")  # CricaVPR's; SelaVPR's two


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """scaled_dot_product_attention(q [.., Nq, d], k [.., Nk, d], v [.., Nk, dv]): the two matrix
    products, Nq*Nk*d + Nq*Nk*dv multiply-adds per batch and head (softmax not counted)."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = int(np.prod(q[:-2]))
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def native_mha_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """torch's fused multi-head attention (nn.MultiheadAttention's inference fast path; query, key
    and value [B, N, E]): the q, k and v projections, the two attention products summed over heads,
    and the output projection, as the unfused path counts them."""
    b, nq, e = get_shape(inputs[0])
    nk = get_shape(inputs[1])[1]
    return b * (2 * nq * e * e + 2 * nk * e * e + 2 * nq * nk * e)


EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::_native_multi_head_attention": native_mha_flop_jit,
    "aten::upsample_bicubic2d": elementwise_flop_counter(0, 16),  # 4x4 taps per output value
    "aten::avg_pool2d": elementwise_flop_counter(1, 0),  # one add per input value
}


@dataclass
class FlopReport:
    """MACs per image (fvcore 'flops'), per module group, and the operators left uncounted."""

    macs_per_image: float
    by_group: dict[str, float]
    not_counted: dict[str, int]


def flop_analysis(model: torch.nn.Module, x: torch.Tensor) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(model, (x,))
    analysis.set_op_handle(**EXTRA_HANDLES)
    return analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)


def group_totals(per_module: dict[str, float], top_level: list[str]) -> dict[str, float]:
    """Per-module numbers -> top-level children, with the backbone's adapters as their own group."""
    groups = {name: float(per_module.get(name, 0)) for name in top_level}
    adapters = sum(v for k, v in per_module.items() if _ADAPTER.match(k))
    if adapters:
        groups["backbone"] -= adapters
        groups["adapters"] = float(adapters)
    return {k: v for k, v in groups.items() if v}


def count_flops(model: torch.nn.Module, image_size: tuple[int, int], batch: int = 1) -> FlopReport:
    """fvcore MACs of one forward on a [batch, 3, H, W] input, divided by ``batch``."""
    x = torch.rand(batch, 3, *image_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = flop_analysis(model, x)
        total = analysis.total()
        per_module = analysis.by_module()
        unsupported = Counter(analysis.unsupported_ops())
    top = [name for name, _ in model.named_children()]
    groups = {k: v / batch for k, v in group_totals(per_module, top).items()}
    return FlopReport(total / batch, groups, dict(sorted(unsupported.items())))


def _enclosing(name: str) -> list[str]:
    """The modules that hold a dotted parameter (or module) name, outermost first."""
    parts = name.split(".")
    return [".".join(parts[:depth]) for depth in range(1, len(parts))]


def _per_module(counts: dict[str, int]) -> Counter:
    """Counts by dotted name -> the total within each enclosing module."""
    totals: Counter = Counter()
    for name, n in counts.items():
        for module in _enclosing(name):
            totals[module] += n
    return totals


def parameter_groups(model: torch.nn.Module) -> dict[str, int]:
    per_module = _per_module({name: p.numel() for name, p in model.named_parameters()})
    top = [name for name, _ in model.named_children()]
    return {k: int(v) for k, v in group_totals(per_module, top).items()}


def unused_parameters(model: torch.nn.Module, image_size: tuple[int, int]) -> dict[str, int]:
    """Parameters no descriptor depends on, by the module (or parameter) that holds them: those left
    without a gradient after one backward pass of the descriptors' sum (a batch of 2, every
    parameter temporarily trainable). DINOv2's pre-training ``mask_token`` is one; a released
    model's never-run branch (SelaVPR's local ``LocalAdapt``, BoQ's final norm) others."""
    was_training = model.training
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model(torch.rand(2, 3, *image_size)).float().sum()
            if out.requires_grad:  # else no parameter reaches the descriptors (or there are none)
                out.backward()
        unused: dict[str, int] = Counter()
        for name, p in model.named_parameters():
            if p.grad is None:
                holder = name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias")) else name
                unused[holder] += p.numel()
    finally:
        for name, p in model.named_parameters():
            p.grad = None
            p.requires_grad_(flags[name])
        model.train(was_training)
    return _collapse(dict(unused), model)


def _collapse(unused: dict[str, int], model: torch.nn.Module) -> dict[str, int]:
    """Report a module once when all of its parameters are unused (``LocalAdapt``, not its parts)."""
    sizes = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_modules()}
    unused_within = _per_module(unused)
    out: Counter = Counter()
    for name, n in unused.items():
        whole = next((m for m in _enclosing(name) if unused_within[m] == sizes[m]), name)
        out[whole] += n
    return dict(sorted(out.items()))


def tdda_offset_passes(model) -> str | None:
    """How many times the counted TDDA runs its offset generator per image, and how that differs from
    the official code; None for models without TDDA. A FLOPs reduction cited from these numbers is of
    vprbench's once-per-image TDDA (same outputs), not of the released model's 13 passes."""
    from vprbench.models.aggregators import REGIONS, TDDA

    tdda = next((m for m in model.modules() if isinstance(m, TDDA)), None)
    if tdda is None:
        return None
    if tdda.recompute_offsets_per_region:
        return f"{len(REGIONS)} per image, once per region, as the official D2VPR.py"
    return (
        f"1 per image (vprbench computes the region-independent offset map once; the official "
        f"D2VPR.py runs it once per region, {len(REGIONS)} times, with identical outputs)"
    )
