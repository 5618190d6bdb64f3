"""Activation patching: copy activations from one run into another, site by site, head by head, position by position.

``direction="denoise"`` (default) runs the *corrupted* input and restores one clean activation;
``"noise"`` runs the clean input and inserts one corrupted activation. The effect is the metric
change normalised by the gap between the two runs:
``(m_patched − m_target) / (m_source − m_target)`` (1: the patch carries the whole difference).

Per-head sites are indexed by the head axis they really have: ``z``, ``q`` and ``result`` by
*query* head, ``k`` and ``v`` by *kv* head (in GQA/MQA several query heads read one kv head; a
per-query-head k/v patch does not exist, which is the bug of TransformerLens #980). Many patches
run in one forward pass: the target batch is repeated and each copy gets its own patch.

>>> from interp.circuits.patching import activation_patching, logit_diff
>>> res = activation_patching(model, clean_ids, corrupt_ids, logit_diff(good, bad),
...                           sites="blocks.*.attn.hook_z")                                        # doctest: +SKIP
>>> res.df.head(); res.heatmap("blocks.*.attn.hook_z").show()                                      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from interp import logs
from interp.core.kv_cache import fork, run_cached
from interp.core.masks import position_kwargs
from interp.core.model import Model
from interp.core.sites import Pattern, as_glob, head_axis, head_label, layer_glob, layer_of
from interp.errors import BadInputError, UnknownNameError, as_index, check_position, whole_number
from interp.results.protocol import TableResult

if TYPE_CHECKING:
    pass

# The sites patching supports; which of them have a head axis, and whose heads it counts, is
# ``interp.core.sites.head_axis`` (z, q, result: query heads; k, v: kv heads).
SITES = (
    "blocks.{l}.attn.hook_z",
    "blocks.{l}.attn.hook_q",
    "blocks.{l}.attn.hook_result",
    "blocks.{l}.attn.hook_k",
    "blocks.{l}.attn.hook_v",
    "blocks.{l}.hook_resid_pre",
    "blocks.{l}.hook_resid_post",
    "blocks.{l}.hook_attn_out",
    "blocks.{l}.hook_mlp_out",
    "blocks.{l}.mlp.hook_post",
)
COLUMNS = ["site", "layer", "head", "position", "effect", "metric"]
Metric = Callable[[torch.Tensor], torch.Tensor]


def _token(item: Any, what: str, tokens: Any) -> str | int:
    if isinstance(item, str):
        return item
    index = as_index(item)  # ints, numpy ints, 0-d integer tensors
    if index is not None:
        return index
    raise BadInputError(f"logit_diff: {what} must be token ids (ints) or strings that are one token each, "
                        f"got {item!r}" + (f" in {tokens!r}" if tokens is not item else ""))


def _token_list(tokens: Any, what: str) -> list[str | int]:
    """One token or a list of them (ids or strings, one per item) as a list."""
    if isinstance(tokens, torch.Tensor) or hasattr(tokens, "__array__"):
        t = torch.as_tensor(tokens)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool or t.ndim > 1:
            raise BadInputError(f"logit_diff: {what} must be token ids (ints) or strings that are one token each, "
                                f"got a {t.dtype} tensor of shape {tuple(t.shape)}")
        return [int(i) for i in t.reshape(-1).tolist()]
    if isinstance(tokens, (list, tuple)):
        if not tokens:
            raise BadInputError(f"logit_diff: {what} is an empty list; give a token or one per item")
        return [_token(item, what, tokens) for item in tokens]
    return [_token(tokens, what, tokens)]


class LogitDiff:
    """Metric: logit of ``good`` minus logit of ``bad`` at ``position``, one value per item.

    Tokens are ids or strings; a string must be exactly one token of the model's tokenizer and
    is looked up by ``bind(model)`` (at construction with ``model=``; the patching functions
    bind it before any forward pass and check the ids against the inputs' batch).
    """

    def __init__(self, good: Any, bad: Any, position: int = -1, model: Any = None):
        self.good, self.bad = _token_list(good, "good"), _token_list(bad, "bad")
        if as_index(position) is None:
            raise BadInputError(f"logit_diff: position must be an int (-1: the last position), got {position!r}")
        self.position = int(position)
        self.spec = f"logit_diff({good!r}, {bad!r})"
        self._ids: tuple[torch.Tensor, torch.Tensor] | None = None
        if model is not None:
            self.bind(model)
        elif not any(isinstance(t, str) for t in [*self.good, *self.bad]):
            self._ids = (torch.tensor(self.good), torch.tensor(self.bad))

    def bind(self, model: Any, n_items: int | None = None, n_pos: int | None = None) -> LogitDiff:
        """Look up string tokens in ``model``'s tokenizer and check every id and the position (before a run)."""
        ids = []
        for name, items in (("good", self.good), ("bad", self.bad)):
            ids.append(torch.tensor([model.token_id(t, f"{self.spec}: {name} token") for t in items]))
            if n_items is not None and len(items) not in (1, n_items):
                raise BadInputError(f"{self.spec}: {name} has {len(items)} tokens but the inputs have {n_items} "
                                    f"item{'s' if n_items != 1 else ''}; give one token for all items or one per item")
        if n_pos is not None:
            check_position(self.position, n_pos, hint=f"{self.spec}: the metric reads logits at {n_pos} position(s)")
        self._ids = (ids[0], ids[1])
        return self

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self._ids is None:
            raise BadInputError(f"{self.spec} names tokens as strings, which need the model's tokenizer: pass "
                                "model= to logit_diff, or use it in activation_patching, attribution_patching or "
                                "ablation_scan, which look the strings up before any forward pass")
        last = logits[:, self.position].float()
        g, b = (_per_row(x.to(last.device), last.shape[0]) for x in self._ids)
        return (last.gather(1, g[:, None]) - last.gather(1, b[:, None])).squeeze(1)

    def __repr__(self) -> str:
        return self.spec


def logit_diff(good: Any, bad: Any, position: int = -1, *, model: Any = None) -> LogitDiff:
    """Metric: logit of ``good`` minus logit of ``bad`` at ``position``, one value per batch item.

    ``good`` and ``bad`` are a token or a list of tokens, one per item; a token is an id or a
    string that is exactly one token of the model's tokenizer (``" Paris"``). Strings are looked
    up with ``model=`` at once, or by ``activation_patching`` / ``attribution_patching`` /
    ``ablation_scan`` before their first forward pass; a string that is several tokens raises
    ``BadInputError`` naming the tokens it splits into.

    Returns:
        A ``LogitDiff`` metric: call it on logits for a ``[batch]`` tensor.

    >>> metric = logit_diff(" Paris", " Rome", model=model)                    # doctest: +SKIP
    """
    return LogitDiff(good, bad, position, model)


def prepare_metric(metric: Any, model: Model, n_items: int, n_pos: int) -> Metric:
    """Check a metric before any forward pass: a callable, and a ``logit_diff`` bound to ``model``
    (its strings looked up, ids in the vocabulary and one per item, its position inside the
    ``n_pos`` logits the metric will see)."""
    if not callable(metric):
        raise BadInputError(f"metric must be a function of the logits [batch, pos, vocab] returning one value per "
                            f"item (e.g. logit_diff(good, bad)), got {type(metric).__name__}")
    bind = getattr(metric, "bind", None)
    if callable(bind):
        bind(model, n_items=n_items, n_pos=n_pos)
    return metric


def _per_row(ids: torch.Tensor, rows: int) -> torch.Tensor:
    """One id per row: a single id for all, or per-item ids tiled over the repeated copies of a batch."""
    ids = ids.reshape(-1)
    if rows % ids.numel():
        raise BadInputError(f"{ids.numel()} per-item token ids do not fit a batch of {rows}")
    return ids.repeat(rows // ids.numel())


def metric_per_item(metric: Metric, logits: torch.Tensor, n_items: int) -> torch.Tensor:
    """The metric of each of the repeated copies: [copies]."""
    copies = logits.shape[0] // n_items
    out = metric(logits)
    if out.ndim == 0:
        raise BadInputError("the metric must return one value per batch item ([batch]), not a scalar, so that "
                         "patches batched together can be told apart")
    return out.float().view(copies, n_items).mean(1)


class PatchingResult(TableResult):
    """A tidy table (``site, layer, head, position, effect, metric``) and the two reference values,
    saved as ``patching.parquet`` and ``patching.json`` (strict JSON; ``interp.results.protocol.TableResult``).

    Args:
        df: the tidy table.
        clean_metric: the metric on the clean run.
        corrupted_metric: the metric on the corrupted run.
        direction: ``denoise`` or ``noise``.
        tokens: the clean input's tokens, for the figures' axes.

    >>> result.save("out/patching"); PatchingResult.load("out/patching")   # doctest: +SKIP
    """

    NAME = "patching"

    def __init__(self, df: pd.DataFrame, clean_metric: float | None, corrupted_metric: float | None, direction: str,
                 tokens: Sequence[str] = ()):
        def num(x: float | None) -> float:  # a reference value saved as null (NaN) reads back as NaN
            return float("nan") if x is None else float(x)

        super().__init__(df, clean_metric=num(clean_metric), corrupted_metric=num(corrupted_metric),
                         direction=direction, tokens=list(tokens))

    @property
    def clean_metric(self) -> float:
        return self.meta["clean_metric"]

    @property
    def corrupted_metric(self) -> float:
        return self.meta["corrupted_metric"]

    @property
    def direction(self) -> str:
        return self.meta["direction"]

    @property
    def tokens(self) -> list[str]:
        return self.meta["tokens"]

    def __repr__(self) -> str:
        return (f"PatchingResult({len(self.df)} patches, sites={list(dict.fromkeys(self.df['site'].map(layer_glob)))}, "
                f"clean {self.clean_metric:.3f}, corrupted {self.corrupted_metric:.3f})")

    def figures(self) -> dict[str, Any]:
        """One heatmap per site (all its layers): ``{"heatmap_<blocks.*.site>": figure}``."""
        return {f"heatmap_{site}": self.heatmap(site) for site in dict.fromkeys(self.df["site"].map(layer_glob))}

    def heatmap(self, site: str | None = None):
        """Plotly heatmap of one site's effects over its layers (``blocks.*.attn.hook_z``, or any
        layer's name, or a short name): layer × head, layer × position, or (head, layer) × position."""
        import plotly.graph_objects as go

        globs = self.df["site"].map(layer_glob)
        sites = list(dict.fromkeys(globs))
        site = as_glob(site) if site else sites[0]
        if site not in sites:
            raise UnknownNameError("site", site, sites)
        part = self.df[globs == site]
        has_head, has_pos = part["head"].notna().any(), part["position"].notna().any()
        if has_head and not has_pos:
            z = part.pivot_table(index="layer", columns="head", values="effect")
            x_title, y_title = "head", "layer"
        elif has_pos and not has_head:
            z = part.pivot_table(index="layer", columns="position", values="effect")
            x_title, y_title = "position", "layer"
        elif has_pos and has_head:
            part = part.assign(row=[head_label(int(a), int(b)) for a, b in zip(part["layer"], part["head"], strict=True)])
            z = part.pivot_table(index="row", columns="position", values="effect", sort=False)
            x_title, y_title = "position", "head"
        else:
            z = part.pivot_table(index="layer", values="effect")
            x_title, y_title = "", "layer"
        x = list(z.columns)
        if x_title == "position" and self.tokens:
            x = [f"{p}: {self.tokens[int(p)]}" for p in z.columns]
        lim = float(max(1e-9, abs(z.to_numpy()).max()))
        fig = go.Figure(go.Heatmap(z=z.to_numpy(), x=x, y=[str(i) for i in z.index], colorscale="RdBu", zmid=0,
                                   zmin=-lim, zmax=lim, colorbar={"title": "effect"}))
        fig.update_layout(title=f"Activation patching ({self.direction}): {site}", xaxis_title=x_title,
                          yaxis_title=y_title, yaxis={"autorange": "reversed"})
        return fig


def _tokens(model: Model, inputs: Any) -> dict[str, torch.Tensor]:
    return model.to_tokens(inputs)


class _Prefix:
    """The first ``length`` tokens, the same in every input, run once; forwards then run only the rest.

    The key/value cache of the prefix (one row) is copied and repeated for each forward's batch,
    so a patched run costs its remaining positions only. Activations and logits then cover those
    positions alone.
    """

    def __init__(self, model: Model, ids: torch.Tensor):
        self.length = int(ids.shape[1])
        with model.trace(), torch.no_grad():
            _, self.cache = run_cached(model.hf, input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1)
        if self.cache is None:
            raise BadInputError(f"{model.name} returned no key/value cache, which shared_prefix needs")

    def run(self, model: Model, tokens: dict[str, torch.Tensor], logits_to_keep: int) -> torch.Tensor:
        tail = tokens["input_ids"][:, self.length :]
        mask = torch.ones(tail.shape[0], self.length + tail.shape[1], dtype=torch.long, device=tail.device)
        out, _ = run_cached(model.hf, fork(self.cache, tail.shape[0]), input_ids=tail, attention_mask=mask,
                            logits_to_keep=logits_to_keep)
        return out.logits


def _logits(model: Model, tokens: dict[str, torch.Tensor], interventions=None, logits_to_keep: int = 0,
            prefix: _Prefix | None = None, sites: Sequence[str] = ()) -> tuple[torch.Tensor, Any]:
    """Logits under ``interventions`` (every position, or only the last ``logits_to_keep``) and the trace of ``sites``."""
    if not logits_to_keep and prefix is None:
        with model.trace(tokens, sites=sites, interventions=interventions) as tr:
            assert tr.logits is not None
            return tr.logits, tr
    tokens = model.to_tokens(tokens)
    with model.trace(sites=sites, interventions=interventions) as tr, torch.no_grad():
        if prefix is not None:
            return prefix.run(model, tokens, logits_to_keep), tr
        return model.hf(**tokens, **position_kwargs(tokens.get("attention_mask")), use_cache=False,
                        logits_to_keep=logits_to_keep).logits, tr


def run_metric(model: Model, tokens: dict[str, torch.Tensor], metric: Metric, interventions=None,
                logits_to_keep: int = 0, prefix: _Prefix | None = None) -> float:
    logits, _ = _logits(model, tokens, interventions, logits_to_keep, prefix)
    return float(metric_per_item(metric, logits, tokens["input_ids"].shape[0]).mean())


@dataclass(frozen=True)
class Patch:
    """One patch: a full site name, its layer, a head on the site's head axis (or None: all), a position (None: all)."""

    site: str
    layer: int
    head: int | None
    position: int | None


def patch_interventions(patches: list[Patch], source: dict[str, torch.Tensor], n_items: int, offset: int = 0) -> dict[str, Any]:
    """One intervention per site name; copy c of the repeated batch gets patch c (at position − ``offset``)."""
    by_site: dict[str, list[tuple[int, Patch]]] = {}
    for c, p in enumerate(patches):
        by_site.setdefault(p.site, []).append((c, p))

    def make(name: str, items: list[tuple[int, Patch]]) -> Callable:
        def fn(x: torch.Tensor, _site: str) -> torch.Tensor:
            src = source[name].to(x.device, x.dtype)  # [n_items, ...]
            if src.shape[1:] != x.shape[1:]:
                raise BadInputError(f"cannot patch {name}: source has shape {tuple(src.shape)}, run has {tuple(x.shape)}")
            x = x.clone()
            for c, p in items:
                rows = slice(c * n_items, (c + 1) * n_items)
                pos = slice(None) if p.position is None else p.position - offset
                if p.head is None:
                    x[rows, pos] = src[:, pos]
                else:
                    x[rows, pos, p.head] = src[:, pos, p.head]
            return x

        return fn

    return {name: make(name, items) for name, items in by_site.items()}


def _shared_prefix(model: Model, clean: dict[str, torch.Tensor], corrupted: dict[str, torch.Tensor],
                   length: int) -> _Prefix | None:
    if not length:
        return None
    ids = torch.cat([clean["input_ids"], corrupted["input_ids"]])
    if not 0 < length < ids.shape[1]:
        raise BadInputError(f"shared_prefix must leave at least one position: got {length} of {ids.shape[1]} tokens")
    if not (bool(clean["attention_mask"].all()) and bool(corrupted["attention_mask"].all())):
        raise BadInputError("shared_prefix needs inputs without padding")
    if not bool((ids[:, :length] == ids[:1, :length]).all()):
        raise BadInputError(f"shared_prefix={length}: the first {length} tokens differ between the inputs")
    return _Prefix(model, ids[:1, :length])


def activation_patching(
    model: Model,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    *,
    sites: Pattern | Sequence[Pattern] = "blocks.*.attn.hook_z",
    layers: Sequence[int] | None = None,
    positions: str | Sequence[int] = "all",
    direction: str = "denoise",
    per_head: bool = True,
    batch_size: int = 16,
    logits_to_keep: int = 0,
    shared_prefix: int = 0,
    progress: bool = True,
) -> PatchingResult:
    """Patch every (site, layer, head, position) from the source run into the target run.

    Args:
        clean, corrupted: inputs of the same token length (a prompt, a batch, or token ids).
        metric: logits ``[batch, pos, vocab]`` -> one value per item ``[batch]`` (e.g. ``logit_diff``).
        sites: sites among ``SITES``, named as everywhere in interp (``interp.core.sites.resolve``): full
            names (``blocks.3.hook_resid_pre``), globs (``blocks.*.attn.hook_z``), short names (``z``:
            every layer) or ``(short name, layer)`` pairs; ``layers`` keeps only those layers.
        positions: ``"all"`` (patch every position at once), ``"each"`` (one position at a time) or a list.
        direction: ``"denoise"`` (clean into corrupted) or ``"noise"`` (corrupted into clean).
        per_head: one patch per head on head sites (else the whole site at once).
        batch_size: patches per forward pass (each copies the whole input batch).
        logits_to_keep: compute the logits of only the last this many positions (0: all); the metric
            then sees ``[batch, logits_to_keep, vocab]``, which suits ``logit_diff`` at position -1 and
            saves the ``[batch · batch_size, pos, vocab]`` tensor of a long prompt.
        shared_prefix: the first this many tokens are the same in every item of both inputs (no
            padding), e.g. shared few-shot demonstrations: they run once (a key/value cache) and are
            not patched (their activations are equal in both runs, so a patch there changes
            nothing). ``"all"`` then patches the positions after them, ``"each"`` each of those;
            positions keep indexing the whole input. The metric sees the logits of those positions only.
        model: the model (an ``interp.Model``)
        progress: show a progress bar.

    Returns:
        A ``PatchingResult`` (``.df``, ``.heatmap(site)``, ``save``).
    """
    if direction not in ("denoise", "noise"):
        raise UnknownNameError("direction", direction, ["denoise", "noise"])
    for name, value, low in (("batch_size", batch_size, 1), ("logits_to_keep", logits_to_keep, 0),
                             ("shared_prefix", shared_prefix, 0)):
        whole_number(value, low, f"activation_patching: {name}")
    clean_t, corr_t = _tokens(model, clean), _tokens(model, corrupted)
    if clean_t["input_ids"].shape != corr_t["input_ids"].shape:
        raise BadInputError(f"clean and corrupted inputs must have the same shape (batch, tokens) so positions line "
                            f"up; got {tuple(clean_t['input_ids'].shape)} and {tuple(corr_t['input_ids'].shape)}")
    n_items, n_pos = clean_t["input_ids"].shape
    layer_list = [model.check_layer(la) for la in layers] if layers is not None else None
    names = [s.name for s in model.resolve(sites, among=SITES, what="patching site", layers=layer_list)]
    # The metric sees the logits of the positions after a shared prefix, or the last logits_to_keep.
    seen = n_pos - shared_prefix if 0 < shared_prefix < n_pos else n_pos
    prepare_metric(metric, model, n_items, min(logits_to_keep, seen) if logits_to_keep else seen)
    if positions == "all":
        pos_list: list[int | None] = [None]
    elif positions == "each":
        pos_list = []
    elif isinstance(positions, str):
        raise UnknownNameError("positions", positions, ["all", "each", "a list of positions"], plural="positions")
    else:
        explicit = []
        for p in positions:
            p = check_position(p, n_pos, hint=f"activation_patching(positions=...): the inputs have {n_pos} tokens "
                                              "(negative positions count from the end)")
            explicit.append(p % n_pos)
        if shared_prefix and any(p < shared_prefix for p in explicit):
            raise BadInputError(f"positions {sorted(p for p in explicit if p < shared_prefix)} lie in the shared prefix "
                                f"(the first {shared_prefix} tokens), which is not patched")
        pos_list = list(explicit)
    prefix = _shared_prefix(model, clean_t, corr_t, shared_prefix)
    start = prefix.length if prefix is not None else 0
    if positions == "each":
        pos_list = list(range(start, n_pos))
    src_t, tgt_t = (clean_t, corr_t) if direction == "denoise" else (corr_t, clean_t)
    _, src_tr = _logits(model, src_t, logits_to_keep=logits_to_keep or 1, prefix=prefix, sites=names)
    source = {n: src_tr[n] for n in names}
    m_clean = run_metric(model, clean_t, metric, logits_to_keep=logits_to_keep, prefix=prefix)
    m_corr = run_metric(model, corr_t, metric, logits_to_keep=logits_to_keep, prefix=prefix)
    m_src, m_tgt = (m_clean, m_corr) if direction == "denoise" else (m_corr, m_clean)
    patches = []
    for name in names:
        axis = head_axis(name)
        n_heads = int(getattr(model.cfg, axis)) if axis else 0
        heads: list[int | None] = list(range(n_heads)) if (axis and per_head) else [None]
        patches += [Patch(name, layer_of(name) or 0, h, p) for h in heads for p in pos_list]
    values: list[float] = []
    chunks = [patches[i : i + batch_size] for i in range(0, len(patches), batch_size)]
    for chunk in logs.progress(chunks, "patching", progress, leave=False):
        reps = len(chunk)
        tokens = {k: v.repeat(reps, 1) for k, v in tgt_t.items()}
        logits, _ = _logits(model, tokens, patch_interventions(chunk, source, n_items, start), logits_to_keep, prefix)
        values += metric_per_item(metric, logits, n_items).tolist()
    gap = m_src - m_tgt
    df = pd.DataFrame({
        "site": [p.site for p in patches],
        "layer": [p.layer for p in patches],
        "head": pd.array([p.head for p in patches], dtype="Int64"),
        "position": pd.array([p.position for p in patches], dtype="Int64"),
        "effect": [(v - m_tgt) / gap if gap != 0 else float("nan") for v in values],
        "metric": values,
    })[COLUMNS]
    tok = getattr(model.tokenizer, "convert_ids_to_tokens", None)
    tokens_txt = [str(t) for t in tok(clean_t["input_ids"][0].tolist())] if callable(tok) else []
    return PatchingResult(df, m_clean, m_corr, direction, tokens_txt)
