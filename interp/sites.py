"""Site names (TransformerLens style) and where each one lives in the real HF modules.

Layouts of what a site holds, by site:

============================================  ==========================================
``hook_embed``, ``blocks.{l}.hook_resid_*``,   ``[batch, pos, d_model]``
``hook_attn_out``, ``hook_mlp_out``,
``ln_final.hook_normalized``
``blocks.{l}.attn.hook_q`` / ``hook_z``       ``[batch, pos, n_heads, d_head]``
``blocks.{l}.attn.hook_k`` / ``hook_v``       ``[batch, pos_k, n_kv_heads, d_head]`` (after rotary;
                                              with a KV cache, every cached position)
``blocks.{l}.attn.hook_result``               ``[batch, pos, n_heads, d_model]`` (per-head output;
                                              summed plus the o_proj bias it is hook_attn_out)
``blocks.{l}.hook_attn_in``, ``hook_mlp_in``  ``[batch, pos, d_model]``: what the attention's / the
                                              MLP's norm reads; an edit reaches that branch only
                                              (TransformerLens's hook_attn_in holds a copy per head)
``blocks.{l}.mlp.hook_pre`` / ``hook_post``   ``[batch, pos, d_mlp]`` (pre-activation / neuron
                                              values read by the down projection)
``logits``                                    ``[batch, pos, vocab]``
============================================  ==========================================

``hook_resid_mid`` is read where the MLP's norm reads it: Hugging Face's decoder layer has already
kept its own copy of the residual there, so it is captured but not edited (an edit would reach
the MLP only; ``hook_mlp_in`` says that).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from interp.errors import BadInputError, OutOfRangeError, UnknownNameError

# Per-layer sites; "{l}" is the layer.
LAYER_SITES = (
    "blocks.{l}.hook_resid_pre",
    "blocks.{l}.hook_resid_mid",
    "blocks.{l}.hook_resid_post",
    "blocks.{l}.hook_attn_out",
    "blocks.{l}.hook_mlp_out",
    "blocks.{l}.hook_attn_in",
    "blocks.{l}.hook_mlp_in",
    "blocks.{l}.attn.hook_q",
    "blocks.{l}.attn.hook_k",
    "blocks.{l}.attn.hook_v",
    "blocks.{l}.attn.hook_z",
    "blocks.{l}.attn.hook_result",
    "blocks.{l}.mlp.hook_pre",
    "blocks.{l}.mlp.hook_pre_linear",
    "blocks.{l}.mlp.hook_post",
)
GLOBAL_SITES = ("hook_embed", "ln_final.hook_normalized", "logits")

# TransformerLens's short names (``utils.get_act_name``) -> the site's name template.
SHORT_NAMES = {
    "embed": "hook_embed", "resid_pre": "blocks.{l}.hook_resid_pre", "resid_mid": "blocks.{l}.hook_resid_mid",
    "resid_post": "blocks.{l}.hook_resid_post", "attn_out": "blocks.{l}.hook_attn_out",
    "mlp_out": "blocks.{l}.hook_mlp_out", "attn_in": "blocks.{l}.hook_attn_in",
    "mlp_in": "blocks.{l}.hook_mlp_in", "q": "blocks.{l}.attn.hook_q", "k": "blocks.{l}.attn.hook_k",
    "v": "blocks.{l}.attn.hook_v", "z": "blocks.{l}.attn.hook_z", "result": "blocks.{l}.attn.hook_result",
    "pre": "blocks.{l}.mlp.hook_pre", "pre_linear": "blocks.{l}.mlp.hook_pre_linear",
    "post": "blocks.{l}.mlp.hook_post", "normalized": "ln_final.hook_normalized", "logits": "logits",
}
_ALIASES = {"mlp_post": "post", "mlp_pre": "pre", "attn_z": "z"}


def act_name(name: str, layer: int | None = None) -> str:
    """The full site name of a TransformerLens short name (as ``transformer_lens.utils.get_act_name``).

    >>> act_name("z", 3)
    'blocks.3.attn.hook_z'
    >>> act_name("resid_pre", 0), act_name("embed")
    ('blocks.0.hook_resid_pre', 'hook_embed')
    """
    template = SHORT_NAMES.get(_ALIASES.get(name, name))
    if template is None:
        raise UnknownNameError("short site name", name, sorted(SHORT_NAMES))
    if "{l}" not in template:
        if layer is not None:
            raise BadInputError(f"act_name({name!r}) names a site outside the blocks; it takes no layer (got {layer})")
        return template
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise BadInputError(f"act_name({name!r}, layer) needs a layer number (0 or more), got {layer!r}")
    return template.format(l=layer)


def layer_glob(name: str) -> str:
    """The same site in every layer: ``blocks.3.attn.hook_z`` -> ``blocks.*.attn.hook_z``.

    >>> layer_glob("blocks.3.attn.hook_z"), layer_glob("hook_embed")
    ('blocks.*.attn.hook_z', 'hook_embed')
    """
    return re.sub(r"^blocks\.\d+\.", "blocks.*.", name)


def as_glob(pattern: str) -> str:
    """A site in every layer, from a short name, a glob or one layer's name.

    >>> as_glob("z"), as_glob("blocks.3.mlp.hook_post"), as_glob("blocks.*.hook_resid_pre")
    ('blocks.*.attn.hook_z', 'blocks.*.mlp.hook_post', 'blocks.*.hook_resid_pre')
    """
    return layer_glob(_unshort(pattern))


def _unshort(pattern: str) -> str:
    """A TransformerLens short name as the glob of its site in every layer; anything else as is."""
    return SHORT_NAMES.get(_ALIASES.get(pattern, pattern), pattern).replace("{l}", "*")


def _matches(pattern: str, valid: list[str]) -> list[str]:
    """The names of ``valid`` that the name or glob ``pattern`` names."""
    if any(c in pattern for c in "*?["):
        return fnmatch.filter(valid, pattern)
    return [pattern] if pattern in valid else []


def resolve(patterns: str | Sequence[str], templates: Sequence[str], n_layers: int, what: str = "site",
            layers: Sequence[int] | None = None) -> list[str]:
    """Full names of ``patterns`` among the per-layer sites an analysis supports (``templates``
    like ``blocks.{l}.attn.hook_z``), in the order given, each pattern's layers ascending.

    A pattern is a full name (``blocks.3.attn.hook_z``), a glob (``blocks.*.attn.hook_z``) or a
    TransformerLens short name (``z``: every layer). ``layers`` keeps only those layers.

    >>> resolve(["blocks.*.attn.hook_z", "resid_pre"], ["blocks.{l}.attn.hook_z", "blocks.{l}.hook_resid_pre"], 2)
    ['blocks.0.attn.hook_z', 'blocks.1.attn.hook_z', 'blocks.0.hook_resid_pre', 'blocks.1.hook_resid_pre']
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    valid = [t.format(l=la) for t in templates for la in range(n_layers)]
    allowed = [t.replace("{l}", "*") for t in templates]
    out: list[str] = []
    for pattern in patterns:
        full = _unshort(pattern)
        matches = _matches(full, valid)
        if not matches:
            layer = layer_of(full)
            if layer is not None and layer >= n_layers and layer_glob(full) in allowed:
                raise OutOfRangeError("layer", layer, n_layers)
            raise UnknownNameError(what, pattern, allowed,
                                   hint="full names (blocks.3.attn.hook_z), globs (blocks.*.attn.hook_z) "
                                        "or TransformerLens short names (z)")
        matches.sort(key=lambda n: -1 if (la := layer_of(n)) is None else la)
        out.extend(m for m in matches if m not in out)
    if layers is not None:
        keep = set(layers)
        out = [n for n in out if (la := layer_of(n)) is None or la in keep]
    return out


def layer_of(name: str) -> int | None:
    """The layer of a per-layer site name (``None`` for a global site)."""
    match = _LAYER_RE.match(name)
    return int(match.group(1)) if match else None


# Sites whose axis 2 is a head axis.
HEAD_SITES = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_result")

Where = Literal["input", "output", "qkv", "result"]


@dataclass(frozen=True)
class Site:
    """One resolved site: its name, layer (None for global sites) and hook point."""

    name: str
    layer: int | None
    leaf: str  # the last name component, e.g. "hook_q"
    module: str  # module path relative to the HF model
    where: Where

    @property
    def has_heads(self) -> bool:
        return self.leaf in HEAD_SITES


def all_site_names(n_layers: int, available: set[str] | None = None) -> list[str]:
    """Every site name of a model with ``n_layers`` layers (optionally only ``available`` leaves)."""
    names = [s.format(l=layer) for layer in range(n_layers) for s in LAYER_SITES]
    names = list(GLOBAL_SITES[:1]) + names + list(GLOBAL_SITES[1:])
    if available is not None:
        names = [n for n in names if n.rsplit(".", 1)[-1] in available or n in available]
    return names


_LAYER_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def expand(patterns: str | list[str] | tuple[str, ...], valid: list[str], n_layers: int) -> list[str]:
    """Expand names and globs (``blocks.*.attn.hook_q``) against the valid site names.

    >>> expand("blocks.*.attn.hook_q", all_site_names(2), 2)
    ['blocks.0.attn.hook_q', 'blocks.1.attn.hook_q']
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    out: list[str] = []
    for pattern in patterns:
        matches = _matches(pattern, valid)
        if not matches:
            _raise_unknown(pattern, valid, n_layers)
        out.extend(m for m in matches if m not in out)
    return out


def _raise_unknown(pattern: str, valid: list[str], n_layers: int) -> None:
    match = _LAYER_RE.match(pattern)
    templates = [s.replace("{l}", "{layer}") for s in LAYER_SITES] + list(GLOBAL_SITES)
    if match and int(match.group(1)) >= n_layers and f"blocks.0.{match.group(2)}" in valid:
        raise OutOfRangeError("layer", int(match.group(1)), n_layers)
    raise UnknownNameError(
        "site", pattern, templates, hint=f"layers are 0..{n_layers - 1}; globs like blocks.*.attn.hook_q work"
    )
