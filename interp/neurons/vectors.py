"""Neuron weight vectors in residual-stream space, and the effective gains of norm modules.

A neuron ``i`` of layer ``l`` has three weight vectors of size ``d_model``:

- ``"up"``: the row of the projection whose output is *multiplied into* the neuron value,
  i.e. ``up_proj`` in gated MLPs (Llama, Gemma, Qwen, Mistral) and the only input projection
  (``c_fc``, ``dense_h_to_4h``) in GPT-2 and GPT-NeoX. Davies (2025) decodes these.
- ``"gate"``: the row of ``gate_proj`` (gated MLPs only).
- ``"down"``: the column of the down projection, the direction the neuron writes.

GPT-2's Conv1D stores ``[in, out]`` rather than ``nn.Linear``'s ``[out, in]``; the adapter's
``conv1d`` flag says which.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from interp.errors import InterpError, OutOfRangeError, UnknownNameError

WEIGHTS = ("up", "gate", "down")
READS = ("up", "gate")  # vectors that read the (normalised) residual stream
# Norms between the MLP and the residual stream ("sandwich" norms of Gemma 2/3), by block
# attribute; the adapters do not name them (yet).
POST_MLP_NORMS = ("post_feedforward_layernorm",)


def valid_weights(model: Any) -> list[str]:
    """The ``weights=`` choices this model has (no ``"gate"`` without a gated MLP)."""
    return ["up", "gate", "down"] if model.adapter.mlp_pre_linear is not None else ["up", "down"]


def check_weights(model: Any, weights: str) -> str:
    valid = valid_weights(model)
    if weights not in valid:
        hint = f"{model.name} has no gated MLP" if weights == "gate" else "see interp.neurons.vectors"
        raise UnknownNameError("weights", weights, valid, hint=hint, plural="weights")
    return weights


def check_neuron(model: Any, layer: int, neuron: int) -> tuple[int, int]:
    """``(layer, neuron)`` if both are inside the model, else ``OutOfRangeError``."""
    model.check_layer(layer)
    if not 0 <= neuron < model.cfg.d_mlp:
        raise OutOfRangeError("neuron", neuron, model.cfg.d_mlp)
    return layer, neuron


def check_layers(model: Any, layers: int | Iterable[int] | None) -> list[int]:
    if layers is None:
        return list(range(model.cfg.n_layers))
    chosen = [layers] if isinstance(layers, int) else list(layers)
    return [model.check_layer(int(layer)) for layer in chosen]


def raw_vectors(model: Any, layer: int, weights: str = "up") -> torch.Tensor:
    """``[d_mlp, d_model]``: one weight vector per neuron, as stored (no norm gains).

    A view of the parameter: writing into it changes the model (tests plant neurons this way).

    Args:
        layer: the layer.
        weights: ``up``, ``gate`` (rows) or ``down`` (columns).

    Returns:
        A tensor ``[d_mlp, d_model]`` (a view, not a copy).
    """
    a = model.adapter
    check_weights(model, weights)
    path = {"up": a.mlp_pre_linear or a.mlp_pre, "gate": a.mlp_pre, "down": a.mlp_out}[weights]
    w = model.weight(model.in_block(layer, path)).detach()
    # nn.Linear stores [out, in]: reading rows are [d_mlp, d_model] already and the down
    # projection [d_model, d_mlp] needs a transpose; GPT-2's Conv1D stores [in, out], the reverse.
    transpose = (weights in READS) == a.conv1d
    return w.T if transpose else w


def _probe(d: int) -> torch.Tensor:
    """A mean-zero vector with no zero entry: ±1 alternating (one -2 when ``d`` is odd)."""
    s = torch.ones(d)
    s[1::2] = -1
    if d % 2 and d >= 3:
        s[-2] = -2
    return s


def effective_gain(norm: torch.nn.Module, d: int) -> torch.Tensor:
    """The elementwise gain ``g`` a norm module applies: ``norm(x) = g * x / scale(x) + bias``.

    Probed rather than read from ``.weight``, so it is right for each family as its forward
    computes it: ``weight`` for Llama's RMSNorm and for LayerNorm, ``1 + weight`` for
    Gemma's RMSNorm. The probe ``±c·s`` has mean zero (so LayerNorm's centring leaves it
    alone) and a large scale ``c`` (so ``eps`` is negligible); the difference of the two
    outputs cancels any bias.

    Args:
        d: its width.

    Returns:
        The gain, a tensor ``[d]``.

    >>> ln = torch.nn.LayerNorm(4); _ = torch.nn.init.constant_(ln.weight, 3.0)
    >>> effective_gain(ln, 4).tolist()
    [3.0, 3.0, 3.0, 3.0]
    """
    if d < 2:
        raise InterpError(f"cannot probe the gain of a norm over {d} dimension(s)")
    param = next(norm.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    s = _probe(d)
    c = 1024.0  # exact in every float dtype; eps / c² is far below float precision
    x = torch.stack([c * s, -c * s])[None].to(device=device, dtype=dtype)
    with torch.no_grad():
        out = norm(x).float().cpu()[0]
    unit = s / s.pow(2).mean().sqrt()  # what a norm without gain makes of s
    return (out[0] - out[1]) / (2 * unit)


def post_mlp_norm(model: Any, layer: int) -> torch.nn.Module | None:
    """The norm the MLP's output passes before it joins the residual stream, if the family has one."""
    block = model.blocks[layer]
    return next((getattr(block, name) for name in POST_MLP_NORMS if hasattr(block, name)), None)


def decoding_vectors(
    model: Any,
    layer: int,
    weights: str = "up",
    *,
    apply_input_ln: bool | None = None,
    apply_final_norm: bool = True,
) -> torch.Tensor:
    """``[d_mlp, d_model]`` float32 vectors whose product with the unembedding is the decode.

    ``apply_input_ln`` (default: on for ``up``/``gate``, off for ``down``) scales by the
    gain of the norm before the MLP: a reading row ``w`` sees ``g_in * x / rms(x)``, so the
    residual direction it responds to is ``g_in * w``. ``apply_final_norm`` (default on)
    scales by the final norm's gain, which the residual stream passes before the
    unembedding. A ``down`` column is always scaled by the gain of the norm after the MLP
    where the family has one (Gemma's ``post_feedforward_layernorm``): that is the direction
    it adds to the residual stream. Biases and the scalar normalisation are left out: they
    do not depend on the neuron.

    Args:
        model: the model (an ``interp.Model``)
        layer: the layer.
        weights: ``up``, ``gate`` (rows) or ``down`` (columns).

    Returns:
        A float32 tensor ``[d_mlp, d_model]``.
    """
    check_weights(model, weights)
    if apply_input_ln is None:
        apply_input_ln = weights in READS
    elif apply_input_ln and weights not in READS:
        raise InterpError(
            "apply_input_ln scales vectors that read the normalised residual (weights='up' or 'gate'); "
            "the down projection writes after the MLP, so pass apply_input_ln=False or leave it None"
        )
    v = raw_vectors(model, layer, weights).float()
    d = v.shape[1]
    if apply_input_ln:
        v = v * effective_gain(model.module(model.in_block(layer, model.adapter.ln_mlp)), d).to(v.device)
    post = post_mlp_norm(model, layer) if weights == "down" else None
    if post is not None:
        v = v * effective_gain(post, d).to(v.device)
    if apply_final_norm:
        v = v * effective_gain(model.module(model.adapter.final_norm), d).to(v.device)
    return v


def unembedding(model: Any) -> torch.Tensor:
    """``[vocab, d_model]`` float32 unembedding (bias left out, see ``decoding_vectors``)."""
    return model.weight(model.adapter.unembed).detach().float()  # lm_head is an nn.Linear in every family
