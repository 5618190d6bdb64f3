"""Pure tensor reductions over attention and unembedding (``interp.kernels``)."""

# From the repository root, the link ``kernels`` makes this folder importable under the name of
# Hugging Face's package, which transformers imports to probe for it. Under that name it defines
# nothing, so the probe finds no version instead of re-entering a half-imported transformers.
if __name__ == "interp.kernels":
    from interp.kernels.argmax import decode_argmax
    from interp.kernels.attention_stats import AttentionStats, attention_stats
    from interp.kernels.decode import TopTokens, decode_topk
    from interp.kernels.targets import RULES

    __all__ = ["RULES", "AttentionStats", "TopTokens", "attention_stats", "decode_argmax", "decode_topk"]
