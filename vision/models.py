"""Models over pixel vectors: self-attention, the same network with a convolution, and a small ResNet.

An image is a set of vectors, one per pixel, each holding that pixel's C channel values. Every model in
``PixelHierarchy`` embeds each pixel vector linearly, adds a 2-D positional encoding, and then alternates
a *spatial operator* (mixes pixels) with a per-pixel MLP (mixes channels), in three stages joined by
2×2 patch merging. Only the spatial operator differs between the two variants:

    operator="attention": each pixel weighs other pixels by content. At high resolution it attends within
        its local ``window × window`` tile; where a stage has at most ``global_max_tokens`` pixels it
        attends to every pixel of its grid. Where pixels are is told by a 2-D sinusoidal encoding added
        to the embeddings; optionally (``relative_bias``) a relative 2-D position bias lets heads prefer
        offsets, as a convolution does: a learned value per offset (``"table"``, core's
        ``RelativePositionBias2d``) or Cordonnier et al.'s quadratic encoding (``"quadratic"``, core's
        ``QuadraticPositionBias2d``: a learned centre and sharpness per head, run on the fused kernel).
    operator="conv": each pixel takes a fixed, learned weighting of its ``kernel_size²`` neighbourhood,
        the same at every position and for every image: a convolution.

With ``conv_stages = k`` the attention model's first k stages use the convolution (a convolutional stem,
attention above it); the report says so, and 0, the default, keeps attention at every stage.

``ResNet`` is the standard baseline: the residual network of Page's DAWNBench CIFAR-10 entry ("ResNet-9"),
with its widths scaled by ``width``.

Legend: B batch, C channels, T pixels (tokens) of a stage, D model dim, H heads, h/w grid height/width,
n windows per image, P pixels per window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.multihead import MultiHeadAttention
from core.positional import QuadraticPositionBias2d, RelativePositionBias2d, SinusoidalPositionalEncoding2d

OPERATORS = ("attention", "conv")
#: ``relative_bias`` settings: none, a learned value per 2-D offset, or the quadratic encoding
RELATIVE_BIASES = ("off", "table", "quadratic")


@dataclass
class PixelModelConfig:
    """Hyper-parameters of ``PixelHierarchy``; saved with every checkpoint."""

    operator: str = "attention"  # spatial operator: "attention" or "conv"
    in_channels: int = 3  # C of the pixel vectors (1 for grayscale)
    image_height: int = 32
    image_width: int = 32
    num_classes: int = 10
    # Sized for a CPU budget: the full-resolution stage (one token per pixel) is kept narrow and shallow,
    # because its per-pixel work dominates the cost. Under a CPU budget the smaller network that sees
    # more epochs is the better buy: (16, 48, 96) x (1, 1, 2) learned as much per step as (16, 64, 128) x
    # (1, 1, 3) in a 6-minute trial (41.1% at ~250 steps both) at 1.7x the steps per second.
    dims: tuple[int, ...] = (16, 48, 96)  # D of each stage; stage s runs at 1/2^s of the image size
    depths: tuple[int, ...] = (1, 1, 2)  # blocks per stage
    head_dim: int = 32  # attention heads per stage = max(1, D // head_dim)
    window: int = 4  # side of the local attention tiles at high resolution
    global_max_tokens: int = 256  # a stage with at most this many pixels attends globally
    # A relative 2-D position bias in every attention layer (Cordonnier et al.'s setting): "off", "table"
    # or "quadratic" (see RELATIVE_BIASES). Off by default on CPU: the table sends attention off the fused
    # kernel, 1.4x slower per step here, and in a 6-minute trial it learned about as much per step as the
    # model without it; positions then come from the 2-D sinusoidal encoding added to the pixel embeddings.
    # (Checkpoints from before the quadratic option hold True / False: read as "table" / "off".)
    relative_bias: str = "off"
    kernel_size: int = 3  # side of the convolution operator's neighbourhood
    mlp_ratio: float = 2.0  # hidden width of the per-pixel MLP, relative to D
    dropout: float = 0.0  # on the residual branches
    # The first ``conv_stages`` stages use the convolution even when ``operator`` is "attention": a
    # convolutional stem under the attention stages (as in Xiao et al. 2021, "Early convolutions help
    # transformers see better"). 0 (the default): attention at every stage, pixels as tokens from the start.
    conv_stages: int = 0

    def __post_init__(self):
        if isinstance(self.relative_bias, bool):  # a checkpoint written before "quadratic" existed
            self.relative_bias = "table" if self.relative_bias else "off"
        if self.relative_bias not in RELATIVE_BIASES:
            raise ValueError(f"relative_bias must be one of {RELATIVE_BIASES}, got {self.relative_bias!r}")


@dataclass
class ResNetConfig:
    """Hyper-parameters of ``ResNet``; saved with every checkpoint."""

    in_channels: int = 3
    num_classes: int = 10
    width: int = 16  # channels of the first layer; the stages use 2x, 4x, 8x (Page's original: 64)


# --------------------------------------------------------------------------- spatial operators


def window_partition(x: Tensor, height: int, width: int, window: int) -> Tensor:
    """Cut a pixel grid into ``window × window`` tiles (the grid must be a multiple of ``window``).

    Shapes:
        x (B, T, D) with T = height*width, row-major -> (B*n, P, D), P = window², tiles row-major.
    """
    B, T, D = x.shape
    x = x.view(B, height // window, window, width // window, window, D)
    return x.transpose(2, 3).reshape(-1, window * window, D)  # (B*n, P, D)


def window_merge(x: Tensor, batch: int, height: int, width: int, window: int) -> Tensor:
    """Inverse of ``window_partition``: (B*n, P, D) -> (B, T, D)."""
    D = x.shape[-1]
    x = x.view(batch, height // window, width // window, window, window, D)
    return x.transpose(2, 3).reshape(batch, height * width, D)  # (B, T, D)


class WindowAttention(nn.Module):
    """Self-attention of every pixel to the pixels of its own ``window × window`` tile.

    Tiles do not overlap, so the image is cut into independent sets of P = window² pixels and each set
    is one sequence for ``core.multihead.MultiHeadAttention``; a relative position bias on the 2-D offset
    inside the tile gives each head a learned preference for directions. A grid that is not a multiple
    of ``window`` is zero-padded, and padded pixels are masked out as keys.

    Args:
        dim (int): D.
        num_heads (int): H.
        height, width (int): the grid this layer sees.
        window (int): tile side.

    Shapes:
        x (B, T, D) -> (B, T, D); with ``return_weights``, weights (B*n, H, P, P).
    """

    def __init__(self, dim: int, num_heads: int, height: int, width: int, window: int, relative_bias: str = "table"):
        super().__init__()
        self.height, self.width, self.window = height, width, window
        self.padded_height = math.ceil(height / window) * window
        self.padded_width = math.ceil(width / window) * window
        self.attention = MultiHeadAttention(dim, num_heads)
        self.position_bias = make_position_bias(relative_bias, num_heads, window, window)
        key_mask = None
        if (self.padded_height, self.padded_width) != (height, width):
            real = torch.zeros(self.padded_height, self.padded_width, dtype=torch.bool)
            real[:height, :width] = True
            tiles = window_partition(real.view(1, -1, 1), self.padded_height, self.padded_width, window)
            key_mask = tiles.view(-1, 1, 1, window * window)  # (n, 1, 1, P): True = a real pixel
        self.register_buffer("key_mask", key_mask, persistent=False)

    def forward(self, x: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        B, T, D = x.shape
        pad_h, pad_w = self.padded_height - self.height, self.padded_width - self.width
        if pad_h or pad_w:
            x = F.pad(x.view(B, self.height, self.width, D), (0, 0, 0, pad_w, 0, pad_h)).view(B, -1, D)
        tiles = window_partition(x, self.padded_height, self.padded_width, self.window)  # (B*n, P, D)
        mask = None if self.key_mask is None else self.key_mask.repeat(B, 1, 1, 1)  # (B*n, 1, 1, P)
        result = self.attention(tiles, mask=mask, position_bias=self.position_bias, return_weights=return_weights)
        out, weights = result if return_weights else (result, None)
        out = window_merge(out, B, self.padded_height, self.padded_width, self.window)
        if pad_h or pad_w:
            out = out.view(B, self.padded_height, self.padded_width, D)[:, : self.height, : self.width]
            out = out.reshape(B, T, D)
        return (out, weights) if return_weights else out

    def attention_map(self, weights: Tensor, row: int, col: int) -> Tensor:
        """Head-averaged attention of pixel (row, col) over this layer's grid, for the first image.

        Args:
            weights (Tensor): (B*n, H, P, P) as returned with ``return_weights`` / captured.
            row, col (int): the query pixel on this layer's grid.

        Returns:
            (height, width): zero outside the query's tile.
        """
        w = self.window
        tiles_per_row = self.padded_width // w
        tile = (row // w) * tiles_per_row + col // w
        query = (row % w) * w + col % w
        weights_of_query = weights[tile].detach().mean(dim=0)[query].view(w, w)  # (w, w)
        grid = torch.zeros(self.padded_height, self.padded_width)
        top, left = (row // w) * w, (col // w) * w
        grid[top : top + w, left : left + w] = weights_of_query.float().cpu()
        return grid[: self.height, : self.width]


def make_position_bias(kind: str, num_heads: int, height: int, width: int) -> nn.Module | None:
    """The relative 2-D bias ``kind`` (one of :data:`RELATIVE_BIASES`) over a ``height × width`` grid, or None."""
    if kind == "off":
        return None
    if kind == "table":
        return RelativePositionBias2d(num_heads, max(height, width) - 1, width)
    if kind == "quadratic":
        return QuadraticPositionBias2d(num_heads, width)
    raise ValueError(f"relative bias must be one of {RELATIVE_BIASES}, got {kind!r}")


class GlobalAttention(nn.Module):
    """Self-attention of every pixel to every pixel of the grid, with a relative 2-D position bias.

    Args:
        dim (int): D.
        num_heads (int): H.
        height, width (int): the grid this layer sees.

    Shapes:
        x (B, T, D) -> (B, T, D); with ``return_weights``, weights (B, H, T, T).
    """

    def __init__(self, dim: int, num_heads: int, height: int, width: int, relative_bias: str = "table"):
        super().__init__()
        self.height, self.width = height, width
        self.attention = MultiHeadAttention(dim, num_heads)
        self.position_bias = make_position_bias(relative_bias, num_heads, height, width)

    def forward(self, x: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        return self.attention(x, position_bias=self.position_bias, return_weights=return_weights)

    def attention_map(self, weights: Tensor, row: int, col: int) -> Tensor:
        """Head-averaged attention of pixel (row, col) over the grid, for the first image: (height, width)."""
        return weights[0].detach().mean(dim=0)[row * self.width + col].view(self.height, self.width).float().cpu()


class ConvOperator(nn.Module):
    """A ``kernel_size × kernel_size`` convolution over the pixel grid, 'same' zero padding.

    Shapes:
        x (B, T, D) -> (B, T, D).
    """

    def __init__(self, dim: int, height: int, width: int, kernel_size: int):
        super().__init__()
        self.height, self.width = height, width
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        grid = x.view(B, self.height, self.width, D).permute(0, 3, 1, 2)  # (B, D, h, w), channels-last memory
        return self.conv(grid).permute(0, 2, 3, 1).reshape(B, T, D)


class PixelBlock(nn.Module):
    """Pre-norm residual block: ``x + operator(norm(x))``, then ``x + mlp(norm(x))``.

    Shapes:
        x (B, T, D) -> (B, T, D).
    """

    def __init__(self, dim: int, operator: nn.Module, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.operator = operator
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dropout(self.operator(self.norm1(x)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Halve the grid: each 2×2 group of pixel vectors is concatenated and projected (Swin's merge).

    An odd grid side is zero-padded first.

    Shapes:
        x (B, h*w, D) -> (B, ceil(h/2)*ceil(w/2), out_dim).
    """

    def __init__(self, dim: int, out_dim: int, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        x = x.view(B, self.height, self.width, D)
        x = F.pad(x, (0, 0, 0, self.width % 2, 0, self.height % 2))  # (B, h', w', D), h' and w' even
        h, w = x.shape[1] // 2, x.shape[2] // 2
        x = x.view(B, h, 2, w, 2, D).permute(0, 1, 3, 2, 4, 5).reshape(B, h * w, 4 * D)  # (B, T/4, 4D)
        return self.reduction(self.norm(x))


def stage_grids(config: PixelModelConfig) -> list[tuple[int, int]]:
    """(h, w) of every stage: the image size, halved (rounding up) between stages."""
    grids = [(config.image_height, config.image_width)]
    for _ in config.dims[1:]:
        h, w = grids[-1]
        grids.append((math.ceil(h / 2), math.ceil(w / 2)))
    return grids


class PixelHierarchy(nn.Module):
    """Pixel-vector network in stages; the spatial operator is self-attention or a convolution.

    Args:
        config (PixelModelConfig): the hyper-parameters; ``config.operator`` picks the operator.

    Shapes:
        images (B, C, H, W) -> logits (B, num_classes).
    """

    def __init__(self, config: PixelModelConfig):
        super().__init__()
        if config.operator not in OPERATORS:
            raise ValueError(f"operator must be one of {OPERATORS}, got {config.operator!r}")
        if len(config.dims) != len(config.depths):
            raise ValueError(f"dims {config.dims} and depths {config.depths} must have the same length")
        self.config = config
        self.embed = nn.Linear(config.in_channels, config.dims[0])
        self.position = SinusoidalPositionalEncoding2d(config.dims[0])
        self.grids = stage_grids(config)
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for s, (dim, depth, (h, w)) in enumerate(zip(config.dims, config.depths, self.grids)):
            if s > 0:
                self.merges.append(PatchMerging(config.dims[s - 1], dim, *self.grids[s - 1]))
            blocks = [PixelBlock(dim, self.make_operator(dim, h, w, conv=s < config.conv_stages), config.mlp_ratio,
                                 config.dropout) for _ in range(depth)]
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.LayerNorm(config.dims[-1])
        self.head = nn.Linear(config.dims[-1], config.num_classes)

    def make_operator(self, dim: int, height: int, width: int, conv: bool = False) -> nn.Module:
        config = self.config
        if config.operator == "conv" or conv:
            return ConvOperator(dim, height, width, config.kernel_size)
        num_heads = max(1, dim // config.head_dim)
        if height * width <= config.global_max_tokens:
            return GlobalAttention(dim, num_heads, height, width, config.relative_bias)
        return WindowAttention(dim, num_heads, height, width, config.window, config.relative_bias)

    def forward(self, images: Tensor) -> Tensor:
        B, C, H, W = images.shape
        if (C, H, W) != (self.config.in_channels, self.config.image_height, self.config.image_width):
            raise ValueError(
                f"model was built for ({self.config.in_channels}, {self.config.image_height}, "
                f"{self.config.image_width}) images, got {tuple(images.shape[1:])}"
            )
        x = images.permute(0, 2, 3, 1).reshape(B, H * W, C)  # (B, T, C): one token per pixel
        x = self.position(self.embed(x), H, W)  # (B, T, D)
        for s, stage in enumerate(self.stages):
            if s > 0:
                x = self.merges[s - 1](x)  # (B, T/4, D')
            x = stage(x)
        return self.head(self.norm(x).mean(dim=1))  # (B, num_classes)

    def attention_layers(self) -> list[tuple[str, nn.Module, int]]:
        """(name, operator, stride) of every attention operator, in the order they run; pixel (r, c) of
        the image is pixel (r // stride, c // stride) of the operator's grid."""
        layers = []
        for s, stage in enumerate(self.stages):
            for b, block in enumerate(stage):
                if isinstance(block.operator, (WindowAttention, GlobalAttention)):
                    layers.append((f"stage {s + 1} block {b + 1}", block.operator, 2**s))
        return layers


# --------------------------------------------------------------------------- ResNet baseline


def conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """``x + f(x)`` with f two 3×3 conv-BN-ReLU layers."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNet(nn.Module):
    """The small residual network of Page's DAWNBench CIFAR-10 entry ("ResNet-9").

    prep conv (w) -> conv (2w), pool, residual -> conv (4w), pool -> conv (8w), pool, residual ->
    global max pool -> linear, with the logits scaled by 1/8 as in the original.

    Args:
        config (ResNetConfig): channels, classes and the width w.

    Shapes:
        images (B, C, H, W) -> logits (B, num_classes); any H, W >= 8.
    """

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            conv_bn(config.in_channels, w),
            conv_bn(w, 2 * w), nn.MaxPool2d(2), Residual(2 * w),
            conv_bn(2 * w, 4 * w), nn.MaxPool2d(2),
            conv_bn(4 * w, 8 * w), nn.MaxPool2d(2), Residual(8 * w),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(8 * w, config.num_classes, bias=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images)) * 0.125


# --------------------------------------------------------------------------- building by name

MODEL_NAMES = ("attention", "cnn", "resnet")


def build_model(name: str, config) -> nn.Module:
    """Build model ``name`` from its config dataclass, or rebuild it from the plain dict stored in checkpoints."""
    if not isinstance(config, dict):
        config = asdict(config)
    if name in ("attention", "cnn"):
        config = dict(config)
        for key in ("dims", "depths"):
            config[key] = tuple(config[key])
        return PixelHierarchy(PixelModelConfig(**config))
    if name == "resnet":
        return ResNet(ResNetConfig(**config))
    raise ValueError(f"unknown model {name!r}; choose from {MODEL_NAMES}")


def model_kind(config) -> str:
    """The name ``build_model`` takes for a config dataclass: ``"attention"`` or ``"cnn"`` for a pixel hierarchy
    (by its operator), ``"resnet"`` for the ResNet."""
    if isinstance(config, ResNetConfig):
        return "resnet"
    if isinstance(config, PixelModelConfig):
        return "attention" if config.operator == "attention" else "cnn"
    raise TypeError(f"not a vision model config: {type(config).__name__}")


def default_config(name: str, in_channels: int, image_height: int, image_width: int, num_classes: int,
                   relative_bias: str = "off", dims: tuple[int, ...] | None = None,
                   depths: tuple[int, ...] | None = None, conv_stages: int = 0, global_max_tokens: int | None = None,
                   resnet_width: int | None = None):
    """The default configuration of model ``name`` for a dataset's image shape and classes.

    ``dims`` and ``depths`` (stage widths and blocks per stage) resize the two pixel hierarchies alike
    and are ignored for the ResNet; ``conv_stages`` and ``global_max_tokens`` shape the attention model
    only (the CNN is convolution at every stage already, and has no attention to make global);
    ``resnet_width`` sets the ResNet's first-layer channels (default ``ResNetConfig.width``).
    """
    if name in ("attention", "cnn"):
        sizes = {key: tuple(value) for key, value in (("dims", dims), ("depths", depths)) if value is not None}
        if name == "attention":
            sizes["conv_stages"] = conv_stages
            if global_max_tokens is not None:
                sizes["global_max_tokens"] = global_max_tokens
        config = PixelModelConfig(
            operator="attention" if name == "attention" else "conv", in_channels=in_channels,
            image_height=image_height, image_width=image_width, num_classes=num_classes,
            relative_bias=relative_bias, **sizes,
        )
        if len(config.dims) != len(config.depths) or min(config.dims + config.depths) < 1:
            raise ValueError(f"dims {config.dims} and depths {config.depths} must be positive and of the same "
                             "length (one entry per stage)")
        if not 0 <= config.conv_stages < len(config.dims):
            raise ValueError(f"conv_stages must be in [0, {len(config.dims) - 1}] (at least one attention stage of "
                             f"{len(config.dims)}), got {config.conv_stages}")
        if config.global_max_tokens < 0:
            raise ValueError(f"global_max_tokens must be >= 0, got {config.global_max_tokens}")
        return config
    if name == "resnet":
        if resnet_width is not None and resnet_width < 1:
            raise ValueError(f"resnet_width must be >= 1, got {resnet_width}")
        return ResNetConfig(in_channels=in_channels, num_classes=num_classes,
                            **({} if resnet_width is None else {"width": resnet_width}))
    raise ValueError(f"unknown model {name!r}; choose from {MODEL_NAMES}")


def flops_per_image(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Forward FLOPs for one image, counted by ``core.lab.bench.count_flops`` (torch's ``FlopCounterMode``, with
    the CPU's fused attention kernel counted as the matrix products it does)."""
    from core.lab.bench import count_flops

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        flops = count_flops(lambda: model(torch.zeros(1, *image_shape, device=device)))
    model.train(was_training)
    return flops
