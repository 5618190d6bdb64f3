"""Architecture adapters: where each family keeps its modules, as a small declarative table.

An adapter only names module paths inside the real Hugging Face model; nothing is
reimplemented. Adding a family means adding one file here that defines ``ADAPTER = Adapter(...)``;
it is found by its presence in this package.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

from interp.errors import UnknownNameError


@dataclass(frozen=True)
class Adapter:
    """Module paths of one architecture family. Defaults are the Llama layout.

    Paths under ``layers`` are relative to one decoder block.
    """

    model_types: tuple[str, ...]
    layers: str = "model.layers"
    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    unembed: str = "lm_head"
    attn: str = "self_attn"
    o_proj: str = "self_attn.o_proj"
    mlp: str = "mlp"
    # Output of mlp_pre is hook_pre (the gate in gated MLPs); output of mlp_pre_linear is
    # hook_pre_linear (the up projection, gated MLPs only); the input of mlp_out is hook_post.
    mlp_pre: str = "mlp.gate_proj"
    mlp_pre_linear: str | None = "mlp.up_proj"
    mlp_out: str = "mlp.down_proj"
    ln_attn: str = "input_layernorm"
    # The norm that reads the residual stream before the MLP; its input is hook_resid_mid.
    ln_mlp: str = "post_attention_layernorm"
    # GPT-2's Conv1D stores weights as [in, out] rather than nn.Linear's [out, in].
    conv1d: bool = False

    def is_parallel(self, config: Any) -> bool:
        """Attention and MLP read the same residual (GPT-J/NeoX style): no resid_mid."""
        return bool(getattr(config, "use_parallel_residual", False))


# One module per family, each defining ADAPTER.
FAMILIES = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _registry() -> dict[str, Adapter]:
    table: dict[str, Adapter] = {}
    for family in FAMILIES:
        adapter = importlib.import_module(f"interp.core.adapters.{family}").ADAPTER
        for model_type in adapter.model_types:
            table[model_type] = adapter
    return table


ADAPTERS = _registry()


def adapter_for(hf_model: Any) -> Adapter:
    """The adapter for a loaded HF model, chosen by its ``config.model_type``."""
    model_type = hf_model.config.model_type
    if model_type not in ADAPTERS:
        raise UnknownNameError(
            "architecture", model_type, sorted(ADAPTERS), hint="add a table under interp/core/adapters/ for it"
        )
    adapter = ADAPTERS[model_type]
    try:
        hf_model.get_submodule(adapter.unembed)
    except AttributeError:  # renamed across transformers releases (GPT-NeoX's embed_out before 5.3)
        out = hf_model.get_output_embeddings()
        name = next((n for n, m in hf_model.named_modules() if m is out), None)
        if name is None:
            raise
        adapter = dataclasses.replace(adapter, unembed=name)
    return adapter
