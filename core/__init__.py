"""attnlab's attention core: the one place that knows how attention is computed.

The everyday names are importable from here; the modules hold the rest (see docs/core-api.md):
`core.masks`, `core.attention`, `core.local`, `core.sparse`, `core.multihead`, `core.positional`,
`core.transformer`, `core.decoding`, `core.capture`. The experiment machinery (training loop, runner, records, datasets,
plots, distributed) is `core.lab`, which the attention modules never import.
"""

from core.attention import scaled_dot_product_attention, softmax_attention
from core.capture import capture_attention
from core.decoding import SearchResult, beam_search, ensemble_step, greedy_search
from core.masks import adjacency_mask, causal_mask, chunked_mask, padding_mask, sliding_window_mask, window2d_mask
from core.multihead import MultiHeadAttention
from core.positional import RelativePositionBias, SinusoidalPositionalEncoding
from core.transformer import (
    EncoderDecoder,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

__all__ = [
    "scaled_dot_product_attention",
    "softmax_attention",
    "capture_attention",
    "SearchResult",
    "beam_search",
    "ensemble_step",
    "greedy_search",
    "adjacency_mask",
    "causal_mask",
    "chunked_mask",
    "padding_mask",
    "sliding_window_mask",
    "window2d_mask",
    "MultiHeadAttention",
    "RelativePositionBias",
    "SinusoidalPositionalEncoding",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "EncoderDecoder",
]
