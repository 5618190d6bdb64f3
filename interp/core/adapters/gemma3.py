"""Gemma 3 text models: sliding-window and global layers, q/k norms, sandwich norms.

The MLP reads ``pre_feedforward_layernorm(resid_mid)``; ``post_attention_layernorm`` normalises
the attention output before it joins the residual stream, so it is not the MLP's input norm.
"""

from interp.core.adapters import Adapter

ADAPTER = Adapter(model_types=("gemma3_text", "gemma3"), ln_mlp="pre_feedforward_layernorm")
