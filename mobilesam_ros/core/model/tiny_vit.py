"""MobileSAM's TinyViT-5M image encoder, written for export.

Parameter names match the official checkpoint's `image_encoder.*` tensors, so it loads them
strictly. Unlike the training code it has one input size (1x3x1024x1024) and every shape is a
Python constant fixed at construction, so traced graphs hold no shape arithmetic: reshapes use
literal sizes, windows are padded by constant amounts, and `fuse_()` folds each BatchNorm into
its convolution and gathers the attention-bias tables once.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from mobilesam_ros.core.model.constants import EMBEDDING_CHANNELS, EMBEDDING_SIZE, IMAGE_SIZE

EMBED_DIMS = (64, 128, 160, 320)
DEPTHS = (2, 2, 6, 2)
NUM_HEADS = (2, 4, 5, 10)
WINDOW_SIZES = (7, 7, 14, 7)
MLP_RATIO = 4
MBCONV_EXPAND_RATIO = 4


class ConvBN(nn.Sequential):
    """Convolution followed by BatchNorm (`c`, `bn` as in the checkpoint); `fused()` merges them."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 1, stride: int = 1, pad: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))

    @torch.no_grad()
    def fused(self) -> nn.Conv2d:
        conv, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            groups=conv.groups,
            bias=True,
        )
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm that normalizes reduced-precision input in FP32 and returns its dtype.

    FP32 input takes nn.LayerNorm's own path, so exported graphs are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        normalized = F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return normalized.to(x.dtype)


def _fuse_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, ConvBN):
            setattr(module, name, child.fused())
        else:
            _fuse_children(child)


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(3, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = dim * MBCONV_EXPAND_RATIO
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Downsampling between stages; takes NCHW or (B, H*W, C) tokens, returns tokens."""

    def __init__(self, resolution: int, dim: int, out_dim: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.dim = dim
        self.out_dim = out_dim
        # The official model keeps stride 1 into its last stage (64x64 stays 64x64).
        stride = 1 if out_dim in (320, 448, 576) else 2
        self.out_resolution = resolution // stride
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.reshape(-1, self.resolution, self.resolution, self.dim).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.reshape(-1, self.out_dim, self.out_resolution**2).transpose(1, 2)


class ConvLayer(nn.Module):
    def __init__(self, dim: int, resolution: int, depth: int, out_dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim) for _ in range(depth))
        self.downsample = PatchMerging(resolution, dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Windowed multi-head attention with TinyViT's learned relative-position biases."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.tokens = window * window
        self.scale = self.key_dim**-0.5
        self.dim = dim
        # Fused scaled-dot-product attention instead of explicit products and softmax; set on
        # the FP16 copy run on a GPU (the exported graphs keep the explicit form).
        self.use_sdpa = False
        self.norm = LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        offsets: dict[tuple[int, int], int] = {}
        index = []
        points = list(itertools.product(range(window), range(window)))
        for p1 in points:
            for p2 in points:
                offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                index.append(offsets.setdefault(offset, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer(
            "attention_bias_idxs",
            torch.tensor(index).view(self.tokens, self.tokens),
            persistent=False,
        )
        # (heads, tokens, tokens) table, gathered once by `fuse_()` instead of on every call.
        self.register_buffer("bias_table", torch.empty(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads, kd, n = self.num_heads, self.key_dim, self.tokens
        qkv = self.qkv(self.norm(x)).reshape(-1, n, heads, 3 * kd).permute(0, 2, 1, 3)
        q, k, v = qkv.split([kd, kd, kd], dim=3)
        bias = (
            self.bias_table
            if self.bias_table.numel()
            else self.attention_biases[:, self.attention_bias_idxs]
        )
        if self.use_sdpa:
            # The fused kernels accumulate the logits and the softmax in FP32.
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        elif q.dtype == torch.float32:
            attn = (q @ k.transpose(-2, -1)) * self.scale + bias
            attn = attn.softmax(dim=-1)
            x = attn @ v
        else:
            # Reduced precision: scale before the product (smaller logits), softmax in FP32.
            logits = ((q * self.scale) @ k.transpose(-2, -1)).float() + bias.float()
            x = logits.softmax(dim=-1).to(v.dtype) @ v
        return self.proj(x.transpose(1, 2).reshape(-1, n, self.dim))


class TinyViTBlock(nn.Module):
    def __init__(self, dim: int, resolution: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.dim = dim
        self.resolution = resolution
        self.window = window
        self.padded = -(-resolution // window) * window
        self.windows_per_side = self.padded // window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, dim * MLP_RATIO)
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        res, ws, nw, padded, c = (
            self.resolution,
            self.window,
            self.windows_per_side,
            self.padded,
            self.dim,
        )
        x = x.reshape(-1, res, res, c)
        if padded != res:
            # Zero tokens pad the grid to whole windows; like the official model they take part
            # in attention (normalized inside it) and are cropped afterwards.
            x = F.pad(x, (0, 0, 0, padded - res, 0, padded - res))
        x = x.reshape(-1, nw, ws, nw, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        x = self.attn(x)
        x = x.reshape(-1, nw, nw, ws, ws, c).transpose(2, 3).reshape(-1, padded, padded, c)
        if padded != res:
            x = x[:, :res, :res]
        return x.reshape(-1, res * res, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res, c = self.resolution, self.dim
        x = x + self._window_attention(x)
        x = self.local_conv(x.transpose(1, 2).reshape(-1, c, res, res))
        x = x.reshape(-1, c, res * res).transpose(1, 2)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    def __init__(
        self,
        dim: int,
        resolution: int,
        depth: int,
        num_heads: int,
        window: int,
        out_dim: int | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, resolution, num_heads, window) for _ in range(depth)
        )
        self.downsample = PatchMerging(resolution, dim, out_dim) if out_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor, as SAM's neck computes it."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Reduced-precision input is normalized in FP32: in FP16 the squared deviations overflow
        # once |x - mean| passes 256. FP32 input traces exactly as before (no casts).
        dtype = x.dtype
        if dtype != torch.float32:
            x = x.float()
        centered = x - x.mean(1, keepdim=True)
        variance = (centered * centered).mean(1, keepdim=True)
        x = centered / torch.sqrt(variance + self.eps)
        # (FP16 parameters times the FP32 x promote to FP32 without a cast.)
        x = self.weight[:, None, None] * x + self.bias[:, None, None]
        return x if dtype == torch.float32 else x.to(dtype)


class TinyViTEncoder(nn.Module):
    """1x3x1024x1024 normalized, padded image -> 1x256x64x64 image embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(EMBED_DIMS[0])
        resolution = IMAGE_SIZE // 4
        layers: list[nn.Module] = [ConvLayer(EMBED_DIMS[0], resolution, DEPTHS[0], EMBED_DIMS[1])]
        for i in range(1, len(DEPTHS)):
            # Resolutions 256 -> 128 -> 64 -> 64: the last merge keeps stride 1.
            resolution = IMAGE_SIZE // 4 // 2 ** min(i, 2)
            last = i == len(DEPTHS) - 1
            layers.append(
                BasicLayer(
                    EMBED_DIMS[i],
                    resolution,
                    DEPTHS[i],
                    NUM_HEADS[i],
                    WINDOW_SIZES[i],
                    None if last else EMBED_DIMS[i + 1],
                )
            )
        self.layers = nn.ModuleList(layers)
        self.neck = nn.Sequential(
            nn.Conv2d(EMBED_DIMS[-1], EMBEDDING_CHANNELS, 1, bias=False),
            LayerNorm2d(EMBEDDING_CHANNELS),
            nn.Conv2d(EMBEDDING_CHANNELS, EMBEDDING_CHANNELS, 3, padding=1, bias=False),
            LayerNorm2d(EMBEDDING_CHANNELS),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image)
        for layer in self.layers:
            x = layer(x)
        x = x.reshape(-1, EMBEDDING_SIZE, EMBEDDING_SIZE, EMBED_DIMS[-1]).permute(0, 3, 1, 2)
        return self.neck(x)

    @torch.no_grad()
    def fuse_(self) -> TinyViTEncoder:
        """Prepare for inference in place: fold BatchNorms, gather attention biases, eval mode."""
        self.eval()
        _fuse_children(self)
        for module in self.modules():
            if isinstance(module, Attention):
                module.bias_table = module.attention_biases[:, module.attention_bias_idxs].clone()
        return self
