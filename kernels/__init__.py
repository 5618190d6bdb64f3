"""Pure tensor reductions over attention and unembedding (installed as ``interp.kernels``)."""

from interp.kernels.attention_stats import AttentionStats, attention_stats
from interp.kernels.targets import RULES

__all__ = ["RULES", "AttentionStats", "attention_stats"]
