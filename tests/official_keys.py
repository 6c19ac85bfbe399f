"""Key lists of the official DINOv2-based releases, written from the official module structure (never
from vprbench's modules), and random state dicts to fill them: the baseline tests load these
strictly, so a renamed or missing parameter fails."""

from __future__ import annotations

import torch

VIT = {"vitb14": (768, 12), "vitl14": (1024, 24)}  # embed dim, blocks (vision_transformer.py)


def dinov2_keys(
    prefix: str, mask_token: bool, norm: bool, arch: str = "vitb14"
) -> dict[str, tuple]:
    """The keys and shapes of facebookresearch/dinov2's ViT (vision_transformer.py: vit_base /
    vit_large, block_chunks 0, layer scale), as the hub model and the VPR repositories name them."""
    d, depth = VIT[arch]
    keys = {"cls_token": (1, 1, d), "pos_embed": (1, 1 + 37 * 37, d),
            "patch_embed.proj.weight": (d, 3, 14, 14), "patch_embed.proj.bias": (d,)}  # fmt: skip
    if mask_token:
        keys["mask_token"] = (1, d)
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update({
            b + "norm1.weight": (d,), b + "norm1.bias": (d,),
            b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,), b + "ls1.gamma": (d,),
            b + "norm2.weight": (d,), b + "norm2.bias": (d,),
            b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,),
            b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,), b + "ls2.gamma": (d,),
        })  # fmt: skip
    if norm:
        keys.update({"norm.weight": (d,), "norm.bias": (d,)})
    return {prefix + k: v for k, v in keys.items()}


def random_state(keys: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Small random values for every key; BatchNorm buffers as BatchNorm keeps them (a positive
    running variance, an integer batch count)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            state[k] = 0.5 + torch.rand(shape, generator=g)
        else:
            state[k] = 0.02 * torch.randn(shape, generator=g)
    return state


def count(keys: dict[str, tuple]) -> int:
    """Parameters (and buffers) in a key list."""
    total = 0
    for shape in keys.values():
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def as_numpy1_pickle(path, out):
    """``path`` (a torch.save of numpy values under numpy 2) as numpy 1.x writes it: its pickle names
    ``numpy.core.multiarray`` where numpy 2 writes ``numpy._core.multiarray`` (protocol 2 names globals
    as text lines, so the rename keeps the pickle valid)."""
    import zipfile

    new, old = b"numpy._core.multiarray", b"numpy.core.multiarray"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                data = src.read(info)
                if info.filename.endswith("data.pkl"):
                    assert new in data
                    data = data.replace(new, old)
                dst.writestr(info, data)
    else:  # the legacy format: a sequence of pickles, then the tensors' bytes
        data = path.read_bytes()
        assert new in data
        out.write_bytes(data.replace(new, old))
