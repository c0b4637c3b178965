"""attnlab's attention core: the one place that knows how attention is computed.

The everyday names are importable from here; the modules hold the rest (see docs/core-api.md):
`core.masks`, `core.attention`, `core.local`, `core.sparse`, `core.multihead`, `core.positional`,
`core.transformer`, `core.capture`. The experiment machinery (training loop, runner, records, datasets,
plots, distributed) is `core.lab`, which the attention modules never import.
"""

from core.attention import scaled_dot_product_attention
from core.capture import capture_attention
from core.masks import adjacency_mask, causal_mask, chunked_mask, padding_mask, sliding_window_mask
from core.multihead import MultiHeadAttention
from core.positional import RelativePositionBias, SinusoidalPositionalEncoding
from core.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "scaled_dot_product_attention",
    "capture_attention",
    "adjacency_mask",
    "causal_mask",
    "chunked_mask",
    "padding_mask",
    "sliding_window_mask",
    "MultiHeadAttention",
    "RelativePositionBias",
    "SinusoidalPositionalEncoding",
    "TransformerEncoder",
    "TransformerEncoderLayer",
]
