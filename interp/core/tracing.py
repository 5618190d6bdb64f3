"""Hook tracing: plain PyTorch hooks at named sites, always removed when the trace ends.

Interventions run first at a site; capture and reducers then see the value the model uses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from interp.core.attention import (
    AttentionSpec,
    MaskEdit,
    Observer,
    hooks_of,
    mask_edits_of,
    mask_recorders_of,
    observers_of,
)
from interp.core.masks import additive_only, layer_visible
from interp.core.sites import Site, act_name
from interp.errors import OutOfRangeError, UsageError, check_position

Reducer = Callable[[torch.Tensor], Any]


class Trace:
    """What a traced run captured, by site name.

    A trace records every forward pass that runs while its block is open: its own (a trace
    with inputs runs one on entry), and any ``model.hf(...)``, ``model.generate(...)`` (one
    forward per decoding step) or forward of an inner trace run in the block.
    ``trace.steps(site)`` is the list of a site's values, one per forward pass, in order.
    ``trace[site]`` (also by TransformerLens's short name and layer: ``trace["z", 3]``) is the
    value when the site was captured in exactly one forward pass; after several it raises
    ``UsageError`` rather than pick one: use ``trace.steps(site)[i]``. ``specs[layer]``
    records how that layer computed attention, and ``masks[layer]`` the attention mask it used
    in each forward (after knockouts and compressed caches; None where SDPA's causal flag stood
    for it), for ``attention_pattern``; both only for layers whose ``hook_q`` or ``hook_k`` was
    captured. ``kept_positions[site]`` holds the ``positions=`` a site was captured at (absent:
    every position), and ``reduced`` the sites whose stored value is a reducer's result rather
    than the tensor itself. ``input_ids`` and ``attention_mask`` are the inputs of a trace with
    inputs, or of the last ``model.generate`` run inside one without (prompt and new tokens).
    """

    def __init__(self) -> None:
        self._captured: dict[str, list[Any]] = defaultdict(list)
        self.specs: dict[int, AttentionSpec] = {}
        self.input_ids: torch.Tensor | None = None
        self.attention_mask: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.n_layers: int | None = None  # the traced model's layers, for range checks
        self.kept_positions: dict[str, Any] = {}
        self.reduced: set[str] = set()
        self.ran_forward = False  # the forward pass ran when the trace was entered
        self.acts = False  # it captures, intervenes, observes or stops (more than mask edits)
        # per layer, the mask its attention used in each forward (bool [batch|1, heads|1, q, k],
        # None: SDPA's causal flag; "bias": an additive mask with values other than 0 and -inf)
        self.masks: dict[int, list[Any]] = defaultdict(list)
        self._mask_memo: dict[int, tuple[Any, Any]] = {}

    def __getitem__(self, site: str | tuple[str, int]) -> Any:
        if isinstance(site, tuple):  # TransformerLens's cache["z", 3]

            site = act_name(*site)
        values = self._captured.get(site)
        if not values:
            have = ", ".join(self._captured) or "nothing"
            raise KeyError(f"site {site!r} was not captured in this trace (captured: {have}); pass it in sites=")
        if len(values) > 1:
            raise UsageError(
                f"site {site!r} was captured in {len(values)} forward passes of this trace (its own and the "
                f"model.hf / model.generate steps / inner traces run in its block), so trace[site] would have to "
                f"pick one; use trace.steps({site!r})[i] (one value per forward, in order; [-1] is the last), or "
                f"one trace per forward")
        return values[0]

    def steps(self, site: str | tuple[str, int]) -> list[Any]:
        """The site's value in each forward pass this trace recorded, in order."""
        if isinstance(site, tuple):

            site = act_name(*site)
        if not self._captured.get(site):
            self[site]  # the KeyError naming what was captured
        return list(self._captured[site])

    def __contains__(self, site: object) -> bool:
        return bool(self._captured.get(site))  # type: ignore[call-overload]

    def keys(self) -> list[str]:
        return [k for k, v in self._captured.items() if v]

    def _store(self, site: str, value: Any) -> None:
        self._captured[site].append(value)

    def _keep_mask(self, layer: int, mask: Any, n_q: int, n_k: int, to_cpu: bool) -> None:
        """Record the mask ``layer``'s attention used in this forward; layers that share a mask
        object share the record."""
        if mask is None:
            self.masks[layer].append(None)
            return
        hit = self._mask_memo.get(id(mask))
        if hit is None or hit[0] is not mask:
            if not additive_only(mask):
                kept: Any = "bias"
            else:
                kept = layer_visible(mask, n_q, n_k)
                kept = kept.to("cpu", copy=True) if to_cpu else kept.clone()
            if len(self._mask_memo) >= 4:
                self._mask_memo.pop(next(iter(self._mask_memo)))
            self._mask_memo[id(mask)] = hit = (mask, kept)
        self.masks[layer].append(hit[1])


def slice_text(s: slice) -> str:
    """``slice(100, 200)`` as one writes it (without a step of None)."""
    return f"slice({s.start}, {s.stop})" if s.step is None else f"slice({s.start}, {s.stop}, {s.step})"


def check_slice(s: slice, n: int, hint: str) -> None:
    """``OutOfRangeError`` naming the length ``n`` if the slice keeps no position of ``n``
    (a slice that overlaps them keeps the overlap, as Python's slicing does)."""
    if not len(range(n)[s]):
        raise OutOfRangeError("positions", slice_text(s), n, plural="positions", hint=hint)


def _select(x: torch.Tensor, positions: Any, site: str) -> torch.Tensor:
    """Positions (axis 1) of a captured value; ``positions`` is None, a slice or a list of ints."""
    if positions is None:
        return x
    if isinstance(positions, int):
        positions = [positions]
    if not isinstance(positions, slice):
        n = x.shape[1]
        for p in positions:
            check_position(p, n, hint=f"{site} passed {n} position(s) in this forward call (negative positions "
                                      "count from the end; under generate each step after the prompt passes only "
                                      "the new token)")
    return x[:, positions]


class StopForward(Exception):
    """Raised by the attention of a trace's ``stop_after`` layer to end the forward pass early;
    the trace that asked for it catches it."""


def _stop(layer: int, q: torch.Tensor, k: torch.Tensor, spec: AttentionSpec, lse: torch.Tensor | None) -> None:
    raise StopForward


_stop.ignores_mask = True  # type: ignore[attr-defined]  # it reads nothing, so a mask edit cannot mislead it


class Hooks:
    """Installs the hooks of one trace on a model and removes them all in ``remove``."""

    def __init__(
        self,
        model: Any,
        trace: Trace,
        capture: Iterable[Site],
        interventions: dict[Site, list[Callable]],
        reduce: dict[str, Reducer],
        positions: Any = None,
        to_cpu: bool = True,
        observers: dict[int, Observer] | None = None,
        stop_after: int | None = None,
        mask_edits: dict[int, MaskEdit] | None = None,
    ):
        self.model, self.trace = model, trace
        self.observers = dict(observers or {})
        self.stop_after = stop_after
        self.mask_edits = dict(mask_edits or {})
        self.capture = {s.name for s in capture}
        self.interventions = {s.name: fns for s, fns in interventions.items()}
        self.reduce, self.positions, self.to_cpu = reduce, positions, to_cpu
        self.sites = {s.name: s for s in [*capture, *interventions]}
        self._handles: list[RemovableHandle] = []
        self._qkv: list[tuple[torch.nn.Module, Callable]] = []
        self._observed: list[tuple[torch.nn.Module, Observer]] = []
        self._edited: list[tuple[torch.nn.Module, MaskEdit]] = []
        self._recording: list[tuple[torch.nn.Module, Callable]] = []
        # sites captured at a positions= slice, and interventions with a positions= slice: the
        # lengths they met and whether they ever kept a position (checked when the block ends)
        self._met: dict[tuple[str, int], list[int]] = defaultdict(list)
        self._hit: dict[tuple[str, int], bool] = {}
        self._labels: dict[tuple[str, int], tuple[str, slice]] = {}

    # -- one site value passing by --------------------------------------------------------
    def _meet(self, key: tuple[str, int], selection: Any, n: int, label: str) -> None:
        if isinstance(selection, slice):
            self._met[key].append(n)
            self._hit[key] = self._hit.get(key, False) or bool(len(range(n)[selection]))
            self._labels[key] = (label, selection)

    def process(self, site: Site, value: torch.Tensor) -> torch.Tensor:
        for fn in self.interventions.get(site.name, ()):
            self._meet((site.name, id(fn)), getattr(fn, "positions", None), value.shape[1],
                       f"{getattr(fn, 'label', 'intervention')} at {site.name}: positions=")
            out = fn(value, site.name)
            if out is not None:
                value = out
        if site.name in self.capture:
            reducer = self.reduce.get(site.name)
            if reducer is not None:
                kept = reducer(value)
                self.trace.reduced.add(site.name)
            else:
                self._meet((site.name, 0), self.positions, value.shape[1], f"trace(positions=...) at {site.name}:")
                kept = _select(value.detach(), self.positions, site.name)
                kept = kept.to("cpu", copy=True) if self.to_cpu else kept.clone()
                if self.positions is not None and self.positions != slice(None):
                    self.trace.kept_positions[site.name] = self.positions
            self.trace._store(site.name, kept)
        return value

    # -- installation -----------------------------------------------------------------------
    def install(self) -> None:
        """Attach every hook, recording each as it is attached, so that ``remove`` also undoes an
        install that failed midway (``Model.trace`` calls both inside one ``try``)."""
        groups: dict[tuple[str, str], list[Site]] = defaultdict(list)
        for site in self.sites.values():
            groups[(site.module, site.where)].append(site)
        for (path, where), sites in groups.items():
            module = self.model.module(path)
            if where == "input":
                self._handles.append(module.register_forward_pre_hook(self._input_hook(sites), with_kwargs=True))
            elif where == "output":
                self._handles.append(module.register_forward_hook(self._output_hook(sites)))
            elif where == "result":
                self._handles.append(module.register_forward_hook(self._result_hook(sites[0])))
            else:
                hook = self._qkv_hook(sites)
                hooks_of(module).append(hook)
                self._qkv.append((module, hook))
        for layer, fn in self.observers.items():
            module = self.model.attn_module(layer)
            observers_of(module).append(fn)
            self._observed.append((module, fn))
        for layer, edit in self.mask_edits.items():
            module = self.model.attn_module(layer)
            mask_edits_of(module).append(edit)
            self._edited.append((module, edit))
        # the masks of layers whose q or k is captured, for attention_pattern
        for layer in sorted({s.layer for s in self.sites.values() if s.name in self.capture and
                             s.leaf in ("hook_q", "hook_k") and s.layer is not None}):
            module = self.model.attn_module(layer)
            record = self._mask_recorder()
            mask_recorders_of(module).append(record)
            self._recording.append((module, record))
        if self.stop_after is not None:  # after that layer's attention (and its observers)
            module = self.model.attn_module(self.stop_after)
            observers_of(module).append(_stop)
            self._observed.append((module, _stop))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        for module, hook in self._qkv:
            if hook in hooks_of(module):
                hooks_of(module).remove(hook)
        for module, fn in self._observed:
            if fn in observers_of(module):
                observers_of(module).remove(fn)
        for module, edit in self._edited:
            if edit in mask_edits_of(module):
                mask_edits_of(module).remove(edit)
        for module, record in self._recording:
            if record in mask_recorders_of(module):
                mask_recorders_of(module).remove(record)
        self._handles.clear()
        self._qkv.clear()
        self._observed.clear()
        self._edited.clear()
        self._recording.clear()
        self.trace._mask_memo.clear()

    def check_selections(self) -> None:
        """At the end of a block: a ``positions=`` slice (of the capture or of an intervention)
        that kept no position in any forward pass raises ``OutOfRangeError``, naming the lengths
        the forward passes had, instead of leaving nothing captured or changed in silence."""
        for key, lengths in self._met.items():
            if lengths and not self._hit.get(key, False):
                label, selection = self._labels[key]
                seen = ", ".join(str(n) for n in dict.fromkeys(lengths))
                raise OutOfRangeError(
                    "positions", slice_text(selection), max(lengths), plural="positions",
                    hint=f"{label} kept no position in any of the {len(lengths)} forward pass(es) of this "
                         f"block, which passed {seen} position(s); a slice keeps the positions it overlaps")

    # -- hook factories ----------------------------------------------------------------------
    def _process_input(self, site: Site, value: torch.Tensor) -> torch.Tensor:
        if site.leaf == "hook_z":  # o_proj reads [batch, pos, heads * d_head]
            heads = self.model.cfg.n_heads
            return self.process(site, value.unflatten(-1, (heads, -1))).flatten(-2)
        return self.process(site, value)

    def _input_hook(self, sites: list[Site]):
        def hook(module, args, kwargs):
            if args:
                value = args[0]
                for site in sites:
                    value = self._process_input(site, value)
                return (value, *args[1:]), kwargs
            value = kwargs["hidden_states"]
            for site in sites:
                value = self._process_input(site, value)
            return args, {**kwargs, "hidden_states": value}

        return hook

    def _output_hook(self, sites: list[Site]):
        def hook(module, args, output):
            value = output[0] if isinstance(output, tuple) else output
            for site in sites:
                value = self.process(site, value)
            return (value, *output[1:]) if isinstance(output, tuple) else value

        return hook

    def _result_hook(self, site: Site):
        # Per-head outputs: z_h @ W_O[:, h]ᵀ, summed over heads plus the bias is o_proj's output.
        weight_of = self.model.o_proj_per_head

        def hook(module, args, output):
            z = args[0]
            w = weight_of(site.layer)  # [n_heads, d_head, d_model]
            heads, d_head = w.shape[0], w.shape[1]
            result = torch.einsum("bphd,hdm->bphm", z.reshape(*z.shape[:-1], heads, d_head), w)
            new = self.process(site, result)
            if new is result:
                return output
            bias = getattr(module, "bias", None)
            summed = new.sum(dim=2)
            return summed + bias if bias is not None else summed

        return hook

    def _mask_recorder(self) -> Callable:
        trace, to_cpu = self.trace, self.to_cpu

        def record(layer: int, mask: Any, q: torch.Tensor, k: torch.Tensor) -> None:
            trace._keep_mask(layer, mask, q.shape[2], k.shape[2], to_cpu)

        return record

    def _qkv_hook(self, sites: list[Site]):
        by_leaf = {s.leaf: s for s in sites}
        trace = self.trace

        def hook(layer: int, q, k, v, spec: AttentionSpec):
            trace.specs[layer] = spec
            out = []
            for leaf, x in (("hook_q", q), ("hook_k", k), ("hook_v", v)):
                site = by_leaf.get(leaf)
                if site is not None:
                    # [batch, heads, pos, d] <-> the user layout [batch, pos, heads, d]
                    x = self.process(site, x.transpose(1, 2)).transpose(1, 2)
                out.append(x)
            return tuple(out)

        return hook
