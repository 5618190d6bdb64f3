"""A model's weights as a cheap, content-sensitive key, for caches of weight-derived results.

A parameter's version counter (``_version``) and storage address catch most in-place edits and
replacements, but not all: an edit through ``weight.data`` (``model.lm_head.weight.data[3] *= 2``)
goes through a tensor whose version counter is its own, so the parameter's stays as it was.
``weights_fingerprint`` therefore also hashes every parameter's bytes: CRC-32 over the raw
bytes on the CPU (about 0.1 s for 135M float32 weights on one core), a position-weighted sum of
the raw bits on an accelerator (computed there, nothing copied). Any change to any weight gives
a different fingerprint, up to a hash collision (about 1 in 4 billion for a given edit).

``weights_digest`` is the persistent form, for what outlives the process (a scan's checkpoint
stamp): sha256 of every parameter's and buffer's name, dtype, shape and bytes.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any, cast

import torch

_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_CHUNK = 1 << 22
_weights: dict[torch.device, torch.Tensor] = {}


def _coefficients(device: torch.device) -> torch.Tensor:
    """Fixed odd pseudo-random int64 multipliers, one per position of a chunk."""
    if device not in _weights:
        g = torch.Generator().manual_seed(0x5EED)
        c = torch.randint(-(2**62), 2**62, (_CHUNK,), generator=g, dtype=torch.int64) | 1
        _weights[device] = c.to(device)
    return _weights[device]


def tensor_hash(t: torch.Tensor) -> int:
    """A hash of a tensor's bytes (its dtype and shape are not part of it)."""
    flat = t.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return 0
    if flat.device.type == "cpu":
        return zlib.crc32(cast(Any, flat.view(torch.uint8).numpy()))  # ndarray is a buffer
    return bits_hash(flat)


def bits_hash(flat: torch.Tensor) -> int:
    """The accelerator's hash: sum over positions of the raw bits times a fixed odd multiplier
    per position, modulo 2**64, computed where the tensor lives (a change of one element, or a
    swap of two, changes it)."""
    bits = flat.view(_BITS[flat.element_size()]) if flat.element_size() in _BITS else flat.view(torch.uint8)
    coef = _coefficients(flat.device)
    total = torch.zeros((), dtype=torch.int64, device=flat.device)
    for start in range(0, bits.numel(), _CHUNK):
        part = bits[start : start + _CHUNK].to(torch.int64)
        total += (part * coef[: part.numel()]).sum()  # wraps modulo 2**64
    return int(total)


def weights_fingerprint(model: Any) -> tuple:
    """Identity of a model's current weights: for each parameter its object, storage address,
    version counter, shape, dtype, device and a hash of its bytes (``tensor_hash``). Any change
    to any weight, in place (also through ``.data``) or by replacement, gives another fingerprint."""
    hf = getattr(model, "hf", model)
    return tuple((id(p), p.data_ptr(), p._version, tuple(p.shape), p.dtype, str(p.device), tensor_hash(p))
                 for p in hf.parameters())


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer of ``module`` (names, dtypes, shapes and bytes), so
    two models with the same name but other weights never share a checkpoint. Computed afresh
    each time (a second or two for 135M float32 weights on 2 cores): an edit through ``weight.data`` leaves no
    trace a cache could key on.

    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> weights_digest(a) == weights_digest(a), weights_digest(a) == weights_digest(b)
    (True, False)
    """
    digest = hashlib.sha256()
    for name, t in module.state_dict(keep_vars=True).items():
        digest.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        flat = t.detach().reshape(-1)
        for start in range(0, flat.numel(), 1 << 24):  # 16M elements at a time, copied to the CPU
            digest.update(flat[start:start + (1 << 24)].cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()
