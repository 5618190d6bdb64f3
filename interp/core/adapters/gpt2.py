"""GPT-2: fused qkv and Conv1D projections."""

from interp.core.adapters import Adapter

ADAPTER = Adapter(
    model_types=("gpt2",),
    layers="transformer.h",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    attn="attn",
    o_proj="attn.c_proj",
    mlp_pre="mlp.c_fc",
    mlp_pre_linear=None,
    mlp_out="mlp.c_proj",
    ln_attn="ln_1",
    ln_mlp="ln_2",
    conv1d=True,
)
