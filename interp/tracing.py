"""Hook tracing: plain PyTorch hooks at named sites, always removed when the trace ends.

Interventions run first at a site; capture and reducers then see the value the model uses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from interp.attention import AttentionSpec, MaskEdit, Observer, hooks_of, mask_edits_of, observers_of
from interp.errors import OutOfRangeError
from interp.sites import Site

Reducer = Callable[[torch.Tensor], Any]


class Trace:
    """What a traced run captured, by site name.

    ``trace[site]`` is the value of the last forward call (also by TransformerLens's short name
    and layer: ``trace["z", 3]``); ``trace.steps(site)`` every call (one per decoding step
    under ``generate``). ``specs[layer]`` records how that layer
    computed attention, for ``attention_pattern``. ``kept_positions[site]`` holds the
    ``positions=`` a site was captured at (absent: every position), and ``reduced`` the
    sites whose stored value is a reducer's result rather than the tensor itself.
    ``input_ids`` and ``attention_mask`` are the inputs of a trace with inputs, or of the last
    ``model.generate`` run inside one without (prompt and new tokens).
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

    def __getitem__(self, site: str | tuple[str, int]) -> Any:
        if isinstance(site, tuple):  # TransformerLens's cache["z", 3]
            from interp.sites import act_name

            site = act_name(*site)
        values = self._captured.get(site)
        if not values:
            have = ", ".join(self._captured) or "nothing"
            raise KeyError(f"site {site!r} was not captured in this trace (captured: {have}); pass it in sites=")
        return values[-1]

    def steps(self, site: str) -> list[Any]:
        self[site]  # same error for a missing site
        return list(self._captured[site])

    def __contains__(self, site: object) -> bool:
        return bool(self._captured.get(site))  # type: ignore[call-overload]

    def keys(self) -> list[str]:
        return [k for k, v in self._captured.items() if v]

    def _store(self, site: str, value: Any) -> None:
        self._captured[site].append(value)


def _select(x: torch.Tensor, positions: Any, site: str) -> torch.Tensor:
    """Positions (axis 1) of a captured value; ``positions`` is None, a slice or a list of ints."""
    if positions is None:
        return x
    if isinstance(positions, int):
        positions = [positions]
    if not isinstance(positions, slice):
        n = x.shape[1]
        for p in positions:
            if not -n <= p < n:
                raise OutOfRangeError(
                    "position", p, n,
                    hint=f"{site} passed {n} position(s) in this forward call (negative positions count from "
                         f"the end; under generate each step after the prompt passes only the new token)",
                )
    return x[:, positions]


class StopForward(Exception):
    """Raised by the attention of a trace's ``stop_after`` layer to end the forward pass early;
    the trace that asked for it catches it."""


def _stop(layer: int, q: torch.Tensor, k: torch.Tensor, spec: AttentionSpec, lse: torch.Tensor | None) -> None:
    raise StopForward


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

    # -- one site value passing by --------------------------------------------------------
    def process(self, site: Site, value: torch.Tensor) -> torch.Tensor:
        for fn in self.interventions.get(site.name, ()):
            out = fn(value, site.name)
            if out is not None:
                value = out
        if site.name in self.capture:
            reducer = self.reduce.get(site.name)
            if reducer is not None:
                kept = reducer(value)
                self.trace.reduced.add(site.name)
            else:
                kept = _select(value.detach(), self.positions, site.name)
                kept = kept.to("cpu", copy=True) if self.to_cpu else kept.clone()
                if self.positions is not None and self.positions != slice(None):
                    self.trace.kept_positions[site.name] = self.positions
            self.trace._store(site.name, kept)
        return value

    # -- installation -----------------------------------------------------------------------
    def install(self) -> None:
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
            module = self.model.module(f"{self.model.adapter.layers}.{layer}.{self.model.adapter.attn}")
            observers_of(module).append(fn)
            self._observed.append((module, fn))
        for layer, edit in self.mask_edits.items():
            module = self.model.module(f"{self.model.adapter.layers}.{layer}.{self.model.adapter.attn}")
            mask_edits_of(module).append(edit)
            self._edited.append((module, edit))
        if self.stop_after is not None:  # after that layer's attention (and its observers)
            module = self.model.module(f"{self.model.adapter.layers}.{self.stop_after}.{self.model.adapter.attn}")
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
        self._handles.clear()
        self._qkv.clear()
        self._observed.clear()
        self._edited.clear()

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
