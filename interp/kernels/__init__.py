"""Pure tensor reductions over attention and unembedding (``interp.kernels``)."""

from interp.kernels.argmax import decode_argmax
from interp.kernels.attention_stats import AttentionStats, attention_stats
from interp.kernels.decode import TopTokens, decode_topk
from interp.kernels.targets import RULES

__all__ = ["RULES", "AttentionStats", "TopTokens", "attention_stats", "decode_argmax", "decode_topk"]
