"""DINOv2 vision transformers with the official parameter layout, with CricaVPR's conv adapters or
SelaVPR's MLP adapters inside the blocks, or a side chain of adapters beside them (EDTformer's
low-rank parallel adapters, SelaVPR++'s memory-efficient MultiConv adaptation).

Built from timm's layers (Attention, Mlp, LayerScale) so that every key equals the official
``dinov2_vit*14_pretrain.pth`` key (``cls_token``, ``pos_embed`` stored for 518x518, ``mask_token``,
``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``,
``norm``), and the position embeddings are interpolated exactly as the DINOv2 code vendored by CricaVPR
and D²-VPR does it (bicubic, ``scale_factor`` with the +0.1 offset, no antialiasing).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import LayerScale, Mlp
from timm.models.vision_transformer import Attention
from torch import nn

from vprbench.errors import VPRBenchError

PATCH = 14
STORED_GRID = 37  # position embeddings are stored for 518 / 14 = 37 patches a side

ARCHS = {  # name: (embed dim, heads, blocks); MLPs are 4x wide (DINOv2 vision_transformer.py vit_*)
    "vits14": (384, 6, 12),
    "vitb14": (768, 12, 12),
    "vitl14": (1024, 16, 24),
}
ADAPTERS = ("crica", "sela")
# "selavpr++2": SelaVPR++'s two-branch model, a second MultiConv chain (``adapters_hashing``) beside
# the first, from the same tokens, for its binary codes (hashing and rerank on)
SIDE_CHAINS = ("edtformer", "selavpr++", "selavpr++2")


class BasicConv2d(nn.Module):
    """Conv (with bias) -> BatchNorm (eps 1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=True, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class MulConvAdapter(nn.Module):
    """CricaVPR's multi-scale convolution adapter, parallel to a block's MLP.

    tokens [B, 1+H*W, C] -> D_fc1 (C -> C/2), ReLU -> on the patch map: 1x1, 1x1+3x3 and 1x1+5x5 conv
    branches whose outputs concatenate back to C/2 channels -> plus the D_fc1 output (residual; the CLS
    token skips the convs and so comes out doubled, as in the official code) -> D_fc2 (C/2 -> C). ``width`` = C; the branch widths are CricaVPR's
    (768: 192, 24->96, 24->96) scaled by C / 768, as D²-VPR halves them for ViT-S.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        hidden = width // 2
        ch1, red, ch3 = width // 4, width // 32, width // 8
        self.branch1 = BasicConv2d(hidden, ch1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(hidden, red, kernel_size=1), BasicConv2d(red, ch3, kernel_size=3, padding=1)
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(hidden, red, kernel_size=1), BasicConv2d(red, ch3, kernel_size=5, padding=2)
        )
        self.D_fc1 = nn.Linear(width, hidden)
        self.D_fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h = F.relu(self.D_fc1(x))
        b, n, d = h.shape
        patches = h[:, 1:].reshape(b, grid[0], grid[1], d).permute(0, 3, 1, 2)
        mixed = torch.cat([self.branch1(patches), self.branch2(patches), self.branch3(patches)], 1)
        mixed = mixed.reshape(b, d, grid[0] * grid[1]).permute(0, 2, 1)
        return self.D_fc2(torch.cat([h[:, :1], mixed], dim=1) + h)


class MLPAdapter(nn.Module):
    """SelaVPR's adapter (backbone/dinov2/block.py Adapter, bottleneck ratio 0.5): D_fc1 (C -> C/2),
    ReLU, D_fc2 (C/2 -> C), plus its input when ``skip``."""

    def __init__(self, width: int, skip: bool) -> None:
        super().__init__()
        self.skip = skip
        self.D_fc1 = nn.Linear(width, width // 2)
        self.D_fc2 = nn.Linear(width // 2, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.D_fc2(F.relu(self.D_fc1(x)))
        return x + out if self.skip else out


class SideAdapter(nn.Module):
    """EDTformer's low-rank parallel adapter (Tong-Jin01/EDTformer backbone/LadderAdapter.py
    SideAdapter, D_hidden_features 4, GELU, skip, alpha 0.5): z + 0.5 * D_fc2(GELU(D_fc1(z)))."""

    ALPHA = 0.5

    def __init__(self, width: int, hidden: int = 4) -> None:
        super().__init__()
        self.D_fc1 = nn.Linear(width, hidden)
        self.D_fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ALPHA * self.D_fc2(F.gelu(self.D_fc1(x)))


class Block(nn.Module):
    """A DINOv2 block. With CricaVPR's adapter ("crica"), the MLP branch becomes
    ls2(mlp(n) + 0.2 * adapter(n)). With SelaVPR's ("sela"), a serial adapter (``adapter1``, with
    its skip) follows the attention, ls1(adapter1(attn(n))), and a parallel one (``adapter2``) joins
    the MLP branch as CricaVPR's does."""

    ADAPTER_SCALE = 0.2

    def __init__(self, dim: int, heads: int, adapter: str | None) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.norm1 = norm(dim)
        self.attn = Attention(dim, num_heads=heads, qkv_bias=True)
        self.ls1 = LayerScale(dim, init_values=1.0)
        self.norm2 = norm(dim)
        self.mlp = Mlp(dim, hidden_features=4 * dim, act_layer=nn.GELU)
        self.ls2 = LayerScale(dim, init_values=1.0)
        self.adapter = MulConvAdapter(dim) if adapter == "crica" else None
        self.adapter1 = MLPAdapter(dim, skip=True) if adapter == "sela" else None
        self.adapter2 = MLPAdapter(dim, skip=False) if adapter == "sela" else None

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        attended = self.attn(self.norm1(x))
        if self.adapter1 is not None:
            attended = self.adapter1(attended)
        x = x + self.ls1(attended)
        n = self.norm2(x)
        branch = self.mlp(n)
        if self.adapter is not None:
            branch = branch + self.ADAPTER_SCALE * self.adapter(n, grid)
        elif self.adapter2 is not None:
            branch = branch + self.ADAPTER_SCALE * self.adapter2(n)
        return x + self.ls2(branch)


class PatchEmbed(nn.Module):
    """14x14 patches by a strided conv: [B, 3, H, W] -> [B, H/14 * W/14, C]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DINOv2ViT(nn.Module):
    """DINOv2 ViT-S/14, ViT-B/14 (12 blocks) or ViT-L/14 (24 blocks), without registers, optionally
    with an adapter in every block: ``adapters`` True or "crica" (CricaVPR's), "sela" (SelaVPR's).

    ``forward(x, take)`` returns the token sequences [B, 1 + H/14 * W/14, C] after the 1-indexed blocks
    in ``take`` (default: the last), and the patch grid (H/14, W/14). ``final_norm`` adds DINOv2's last
    LayerNorm as ``self.norm`` (the caller applies it; D²-VPR's student has none); ``mask_token``
    keeps DINOv2's pre-training mask token, which no forward pass uses.

    ``side_chain`` runs a chain of adapters (``self.adapters``) beside the frozen blocks, which are
    left unchanged: y starts as the tokens after ``side_start`` blocks, and after each later block
    (output x) becomes A(y + x) ("edtformer": EDTformer vision_transformer.py forward_features, an
    adapter per block from the embeddings) or y + M(y + x) ("selavpr++": SelaVPRplusplus
    model/vision_transformer.py forward_features without hashing, a MultiConv adapter per block from
    the embeddings for ViT-B, and for ViT-L from the 8th block's output over the last 16 blocks).
    The output is then y (only the last: ``take`` must be left out). "selavpr++2" (hashing and
    rerank on) runs a second such chain z beside y with its own adapters (``self.adapters_hashing``)
    and returns both, y then z.
    """

    def __init__(
        self,
        arch: str,
        adapters: bool | str = False,
        final_norm: bool = True,
        mask_token: bool = True,
        side_chain: str | None = None,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise VPRBenchError(f"DINOv2 backbone must be one of {sorted(ARCHS)}, got {arch!r}")
        adapter = "crica" if adapters is True else (adapters or None)
        if adapter is not None and adapter not in ADAPTERS:
            raise VPRBenchError(
                f"DINOv2 adapters must be one of {list(ADAPTERS)}, got {adapters!r}"
            )
        if side_chain is not None and side_chain not in SIDE_CHAINS:
            raise VPRBenchError(
                f"DINOv2 side chain must be one of {list(SIDE_CHAINS)}, got {side_chain!r}"
            )
        dim, heads, depth = ARCHS[arch]
        self.embed_dim = dim
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + STORED_GRID**2, dim))
        # pre-training only; kept for strict keys (MegaLoc's own ViT has none: ``mask_token=False``)
        self.mask_token = nn.Parameter(torch.zeros(1, dim)) if mask_token else None
        self.blocks = nn.ModuleList(Block(dim, heads, adapter) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6) if final_norm else None
        self.side_chain = side_chain
        # selavpr++ on ViT-L: 16 adapters over blocks 9-24 (the official n_blocks == 24 branch)
        multiconv = side_chain in ("selavpr++", "selavpr++2")
        self.side_start = 8 if multiconv and depth == 24 else 0
        if side_chain == "edtformer":
            self.adapters = nn.ModuleList(SideAdapter(dim) for _ in range(depth))
        elif multiconv:
            self.adapters = nn.ModuleList(
                MulConvAdapter(dim) for _ in range(depth - self.side_start)
            )
        if side_chain == "selavpr++2":
            self.adapters_hashing = nn.ModuleList(
                MulConvAdapter(dim) for _ in range(depth - self.side_start)
            )
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def interpolate_pos_encoding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embeddings for a (rows, cols) patch grid, as the official DINOv2 code computes
        them: bicubic ``scale_factor=(rows + 0.1) / 37`` (and cols), which shifts sampling slightly
        from a plain resize to (rows, cols)."""
        if grid == (STORED_GRID, STORED_GRID):
            return self.pos_embed
        pos = self.pos_embed.float()
        dim = pos.shape[-1]
        patch_pos = F.interpolate(
            pos[:, 1:].reshape(1, STORED_GRID, STORED_GRID, dim).permute(0, 3, 1, 2),
            scale_factor=((grid[0] + 0.1) / STORED_GRID, (grid[1] + 0.1) / STORED_GRID),
            mode="bicubic",
        )
        assert patch_pos.shape[-2:] == grid
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([pos[:, :1], patch_pos], dim=1).to(self.pos_embed.dtype)

    def forward(
        self, x: torch.Tensor, take: tuple[int, ...] | None = None, hashing: bool = True
    ) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """``hashing`` False: "selavpr++2" runs its first chain only (the float features)."""
        h, w = int(x.shape[-2]), int(x.shape[-1])  # plain ints, also under tracing (fvcore)
        if h % PATCH or w % PATCH:
            raise VPRBenchError(f"DINOv2 input must be a multiple of 14 pixels, got {h}x{w}")
        grid = (h // PATCH, w // PATCH)
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(grid)
        if self.side_chain is not None:
            if take is not None:
                raise VPRBenchError("a DINOv2 side chain returns only its last output (no `take`)")
            return self._side_chain(tokens, grid, hashing), grid
        take = (len(self.blocks),) if take is None else take
        outputs = []
        for i, block in enumerate(self.blocks, start=1):
            tokens = block(tokens, grid)
            if i in take:
                outputs.append(tokens)
        return outputs, grid

    def _side_chain(
        self, tokens, grid: tuple[int, int], hashing: bool = True
    ) -> list[torch.Tensor]:
        second = self.side_chain == "selavpr++2" and hashing
        chains = [self.adapters] + ([self.adapters_hashing] if second else [])
        sides = [tokens] * len(chains) if self.side_start == 0 else None
        for i, block in enumerate(self.blocks, start=1):
            tokens = block(tokens, grid)
            if i == self.side_start:
                sides = [tokens] * len(chains)
            elif i > self.side_start:
                for c, chain in enumerate(chains):
                    adapter = chain[i - self.side_start - 1]
                    if self.side_chain == "edtformer":
                        sides[c] = adapter(sides[c] + tokens)
                    else:
                        sides[c] = sides[c] + adapter(sides[c] + tokens, grid)
        return sides


def init_adapters(backbone: DINOv2ViT) -> None:
    """The adapter initialisation of CricaVPR and D²-VPR: D_fc2 zeroed (each adapter starts as a
    no-op) and every conv weight and bias set to 1e-5."""
    for block in backbone.blocks:
        if block.adapter is None:
            continue
        nn.init.zeros_(block.adapter.D_fc2.weight)
        nn.init.zeros_(block.adapter.D_fc2.bias)
        for module in block.adapter.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.constant_(module.weight, 1e-5)
                nn.init.constant_(module.bias, 1e-5)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def image_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch tokens [B, 1 + R*C, D] (CLS first) -> a feature map [B, D, R, C]."""
    b, _, d = tokens.shape
    return tokens[:, 1:].reshape(b, grid[0], grid[1], d).permute(0, 3, 1, 2)
