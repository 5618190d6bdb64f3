"""Site names (TransformerLens style), the one grammar that reads them and the one table of their axes.

Every function that takes sites (``model.trace``, ``run_with_cache``, ``interventions=``,
``reduce=``, ``circuits.activation_patching``, ...) reads them with ``resolve``: full names,
globs, TransformerLens short names (``z``: every layer) or ``(short name, layer)`` pairs.
``AXES`` says what each site holds after ``[batch, pos]``, and so which sites have a head axis
and whether it counts query or kv heads (``head_axis``). Where each site lives in the real HF
modules is read from the adapter's table by ``Model.resolve``.

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

from interp.errors import BadInputError, OutOfRangeError, UnknownNameError, whole_number

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

    Args:
        layer: the layer, for short names of per-layer sites (None for ``embed``, ``logits``, ...).

    Returns:
        The full site name, a ``str``.

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
    return template.format(l=whole_number(layer, 0, f"act_name({name!r}, layer)'s layer"))


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


Pattern = str | tuple[str, int]  # a full name, glob or short name; or a (short name, layer) pair
GRAMMAR = ("full names (blocks.3.attn.hook_z), globs (blocks.*.attn.hook_z), TransformerLens short names (z: "
           "every layer) or (short name, layer) pairs (('z', 3))")


def _is_pair(x: object) -> bool:
    return (isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) and isinstance(x[1], int)
            and not isinstance(x[1], bool))


def _pattern_list(patterns: Pattern | Sequence[Pattern]) -> list[Pattern]:
    if isinstance(patterns, str) or _is_pair(patterns):
        return [patterns]  # type: ignore[list-item]
    return list(patterns)  # type: ignore[arg-type]


def _glob(pattern: Pattern) -> str:
    """One pattern as a full name or a glob of full names."""
    if _is_pair(pattern):
        return act_name(*pattern)  # type: ignore[misc]
    if not isinstance(pattern, str):
        raise BadInputError(f"a site is a str or a (short name, layer) pair ({GRAMMAR}), got "
                            f"{type(pattern).__name__} {pattern!r}")
    return _unshort(pattern)


def _matches(pattern: str, valid: list[str]) -> list[str]:
    """The names of ``valid`` that the name or glob ``pattern`` names."""
    if any(c in pattern for c in "*?["):
        return fnmatch.filter(valid, pattern)
    return [pattern] if pattern in valid else []


def site_names(templates: Sequence[str], n_layers: int) -> list[str]:
    """Every full name of ``templates`` (``blocks.{l}.attn.hook_z``, or a global site) in a model
    of ``n_layers`` layers, in model order: ``hook_embed``, then layer by layer (the templates'
    order within a layer), then the other global sites.

    >>> site_names(["logits", "blocks.{l}.attn.hook_z", "hook_embed", "blocks.{l}.hook_resid_pre"], 2)
    ['hook_embed', 'blocks.0.attn.hook_z', 'blocks.0.hook_resid_pre', 'blocks.1.attn.hook_z', 'blocks.1.hook_resid_pre', 'logits']
    """
    per_layer = [t for t in templates if "{l}" in t]
    first = [t for t in templates if "{l}" not in t and t in GLOBAL_SITES[:1]]
    last = [t for t in templates if "{l}" not in t and t not in GLOBAL_SITES[:1]]
    return first + [t.format(l=la) for la in range(n_layers) for t in per_layer] + last


def resolve(patterns: Pattern | Sequence[Pattern], templates: Sequence[str], n_layers: int, what: str = "site",
            layers: Sequence[int] | None = None) -> list[str]:
    """Full names of ``patterns`` among ``templates`` (``blocks.{l}.attn.hook_z``; global sites
    such as ``logits`` as they are): the one site grammar of interp, used by ``model.trace``,
    ``model.resolve`` and every analysis that takes sites.

    A pattern is a full name (``blocks.3.attn.hook_z``), a glob (``blocks.*.attn.hook_z``), a
    TransformerLens short name (``z``: every layer; ``embed``, ``logits``) or a ``(short name,
    layer)`` pair (``("z", 3)``, as ``act_name("z", 3)``). Each pattern's sites come in model
    order (``site_names``), the patterns in the order given, each site once. ``layers`` keeps
    only those layers (and the global sites). An unknown name raises ``UnknownNameError``
    listing the valid sites; a layer outside the model ``OutOfRangeError``.

    >>> resolve(["blocks.*.attn.hook_z", "resid_pre"], ["blocks.{l}.attn.hook_z", "blocks.{l}.hook_resid_pre"], 2)
    ['blocks.0.attn.hook_z', 'blocks.1.attn.hook_z', 'blocks.0.hook_resid_pre', 'blocks.1.hook_resid_pre']
    >>> resolve(("z", 1), ["blocks.{l}.attn.hook_z"], 2)
    ['blocks.1.attn.hook_z']
    """
    valid = site_names(templates, n_layers)
    allowed = [t.replace("{l}", "*") for t in templates]
    out: list[str] = []
    for pattern in _pattern_list(patterns):
        full = _glob(pattern)
        matches = _matches(full, valid)
        if not matches:
            layer = layer_of(full)
            if layer is not None and layer >= n_layers and layer_glob(full) in allowed:
                raise OutOfRangeError("layer", layer, n_layers)
            raise UnknownNameError(what, pattern, allowed, hint=f"layers are 0..{n_layers - 1}; sites are {GRAMMAR}")
        out.extend(m for m in matches if m not in out)
    if layers is not None:
        keep = set(layers)
        out = [n for n in out if (la := layer_of(n)) is None or la in keep]
    return out


def layer_of(name: str) -> int | None:
    """The layer of a per-layer site name (``None`` for a global site)."""
    match = _LAYER_RE.match(name)
    return int(match.group(1)) if match else None


_LAYER_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")

# The axes of each site after ``[batch, pos]``, named by the ``ModelConfig`` field that sizes
# them (by the site's last name component). The one place that says which sites have a head
# axis (axis 2) and whose heads it counts: query heads (``n_heads``) or kv heads (``n_kv_heads``).
AXES: dict[str, tuple[str, ...]] = {
    "hook_q": ("n_heads", "d_head"),
    "hook_z": ("n_heads", "d_head"),
    "hook_k": ("n_kv_heads", "d_head"),
    "hook_v": ("n_kv_heads", "d_head"),
    "hook_result": ("n_heads", "d_model"),
    "hook_pre": ("d_mlp",),
    "hook_pre_linear": ("d_mlp",),
    "hook_post": ("d_mlp",),
    "logits": ("d_vocab",),
}  # every other site: ("d_model",)
HEAD_AXES = ("n_heads", "n_kv_heads")


def axes(site: str) -> tuple[str, ...]:
    """The names of a site's axes after ``[batch, pos]``.

    >>> axes("blocks.0.attn.hook_k"), axes("blocks.0.hook_resid_pre")
    (('n_kv_heads', 'd_head'), ('d_model',))
    """
    return AXES.get(site.rsplit(".", 1)[-1], ("d_model",))


def head_axis(site: str) -> str | None:
    """``"n_heads"`` where axis 2 of a site counts query heads, ``"n_kv_heads"`` where it counts
    kv heads (under GQA/MQA fewer), ``None`` where the site has no head axis.

    >>> head_axis("blocks.2.attn.hook_z"), head_axis("blocks.*.attn.hook_v"), head_axis("logits")
    ('n_heads', 'n_kv_heads', None)
    """
    first = axes(site)[0]
    return first if first in HEAD_AXES else None


Where = Literal["input", "output", "qkv", "result"]


@dataclass(frozen=True)
class Site:
    """One resolved site: its name, layer (None for global sites) and hook point."""

    name: str
    layer: int | None
    leaf: str  # the last name component, e.g. "hook_q"
    module: str  # module path relative to the HF model
    where: Where


# -- head labels --------------------------------------------------------------------------------------
# A head is ``layer`` and ``head`` (columns, or ``{"layer": 3, "head": 5}`` records) in every table
# and file; ``L3H5`` is its label for display, written by ``head_label`` and read back by
# ``parse_head_label``, the one place that knows the form.
_HEAD_LABEL = re.compile(r"L(0|[1-9][0-9]*)H(0|[1-9][0-9]*)")


def head_label(layer: int, head: int) -> str:
    """A head's label for display: ``L3H5`` is head 5 of layer 3.

    >>> head_label(3, 5), parse_head_label("L3H5")
    ('L3H5', (3, 5))
    """
    return f"L{layer}H{head}"


def parse_head_label(label: str) -> tuple[int, int]:
    """``(layer, head)`` of a label :func:`head_label` wrote; anything else: ``BadInputError``."""
    match = _HEAD_LABEL.fullmatch(label) if isinstance(label, str) else None
    if match is None:
        raise BadInputError(f"{label!r} is not a head label such as 'L3H5' (head 5 of layer 3)")
    return int(match[1]), int(match[2])
