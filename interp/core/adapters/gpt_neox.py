"""GPT-NeoX (Pythia): parallel attention and MLP when ``use_parallel_residual``."""

from interp.core.adapters import Adapter

ADAPTER = Adapter(
    model_types=("gpt_neox",),
    layers="gpt_neox.layers",
    embed="gpt_neox.embed_in",
    final_norm="gpt_neox.final_layer_norm",
    attn="attention",
    o_proj="attention.dense",
    mlp_pre="mlp.dense_h_to_4h",
    mlp_pre_linear=None,
    mlp_out="mlp.dense_4h_to_h",
)
