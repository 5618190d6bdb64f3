"""The context-vs-prior knob (Minder et al. 2025): where a model reads the intent, and the 1-D
subspace that decides whether it answers from the context or from prior knowledge.

Every quantity is read from the logits of the two answers' first tokens at the last prompt
position: ``LD = logit(context answer) - logit(prior answer)``; an item is answered from the
context when ``LD > 0``. All interventions act at the last position only (as the paper's),
so each run is a one-token step over a cached prefix (``LastTokenRuns``).

1. **Accuracy** under each intent.
2. **Layer localisation.** Patch the attention outputs of a set of layers at the last token
   from the prompt with one intent into the same item's prompt with the other (pairings
   ``CP``: context-intent source, prior-intent target; ``PC``: the reverse), and measure the
   share of the intent's effect on LD that moves over: ``(LD_patched - LD_target) / (LD_source
   - LD_target)`` (means over items). The paper decodes each layer with a Patchscope instead;
   reading the model's own answer logits is as cheap and needs no second prompt. Search, as
   the paper's ``auto_search``: binary-search the smallest ``u`` with recovery of ``[0, u)``
   above ``threshold`` (patching every layer recovers exactly 1: the last token's residual is
   then the source's), then the largest ``l`` with ``[l, u)`` still above it, then (our linear
   step) drop each layer of ``[l, u)`` whose removal keeps recovery above the threshold.
   O(log L + L) patched runs.
3. **Subspace** at the residual output of the last localised layer (the intent has been read
   into the last token by then): rank-1 DAS trained with interchange interventions between the
   two intents' prompts of the same item (loss: cross-entropy of the answer the source's intent
   asks for, over the two answers), on items the model answers right under both intents, as the
   paper does (all training items when fewer than ``min_das_items`` are right); the difference
   of the intents' mean activations as a baseline.
4. **Knob.** Set the projection on the direction to ``mid + k * half_gap`` (``mid``/``half_gap``:
   midpoint and half-distance of the two intents' mean projections on training items, so
   ``k = +-1`` is each intent's mean) and read the answers. ``flip_rate``: among test prompts
   whose answer is not already the one steered towards, the share that switch at ``k = +-2``
   (fixed before any run). ``random_flip_rate``: the same with random unit directions, set to the
   same absolute offsets from their own midpoint.
5. **Correlation** between separation along the direction and task accuracy: per test item,
   ``u.h(context intent) - u.h(prior intent)`` against the share of its two prompts answered as
   the intent asks (Pearson).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from interp import logs
from interp.core.interventions import Intervention, set_value
from interp.core.model import Model
from interp.errors import InterpError
from interp.probes.directions import diff_of_means, fit_rank1_das, interchange
from interp.probes.knob_report import KnobResult, Localisation
from interp.probes.knob_task import KnobItem, first_token, knob_items, prompt
from interp.probes.last_token import LastTokenRuns
from interp.probes.steering import steer

INTENT_PAIRS = {"CP": ("context", "prior"), "PC": ("prior", "context")}  # (source, target)
STEER_K = 2.0  # flip rates are read at mid +- 2 * half_gap
SWEEP_K = (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0)


class IntentRuns:
    """Both intents' prompts for a list of items, ready for last-token runs."""

    def __init__(self, model: Model, items: list[KnobItem], *, batch_size: int = 16):
        if not items:
            raise InterpError("no knob items")
        self.items = items
        self.runs: dict[str, LastTokenRuns] = {}
        for intent in ("prior", "context"):
            texts = [prompt(model, it, intent) for it in items]  # type: ignore[arg-type]
            choices = [[first_token(model, it.prior, t), first_token(model, it.context_object, t)]
                       for it, t in zip(items, texts, strict=True)]
            self.runs[intent] = LastTokenRuns(model, texts, choices, batch_size=batch_size)

    def ld(self, intent: str, interventions: Any = None) -> np.ndarray:
        """``LD = logit(context answer) - logit(prior answer)`` per item."""
        z = self.runs[intent].choice_logits(interventions)
        return z[:, 1] - z[:, 0]


def accuracy(ld: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of items answered as each intent asks."""
    return {"prior": float((ld["prior"] < 0).mean()), "context": float((ld["context"] > 0).mean())}


# -- 2. layer localisation --------------------------------------------------------------------------
def search_layers(recovery: Callable[[list[int]], float], n_layers: int, threshold: float) -> list[int]:
    """The paper's binary search for ``[l, u)`` plus a linear pruning step (see the module doc).

    ``recovery(layers)`` must exceed ``threshold`` for all layers.

    >>> search_layers(lambda ls: sum(w for i, w in enumerate([0, .1, .5, 0, .4]) if i in ls), 5, 0.8)
    [2, 4]
    """
    lo, hi = 1, n_layers  # smallest u with recovery([0, u)) > threshold
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if recovery(list(range(mid))) > threshold else (mid + 1, hi)
    upper = lo
    lo, hi = 0, upper - 1  # largest l with recovery([l, upper)) > threshold
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if recovery(list(range(mid, upper))) > threshold else (lo, mid - 1)
    layers = list(range(lo, upper))
    for layer in list(layers):  # linear step: drop layers the effect does not need
        rest = [x for x in layers if x != layer]
        if rest and recovery(rest) > threshold:
            layers = rest
    return layers


def localise(model: Model, data: IntentRuns, pairing: str = "CP", *, threshold: float = 0.8,
             single_layers: bool = True, progress: bool = True) -> Localisation:
    """Layers whose attention outputs at the last token carry the intent (see the module doc)."""
    if pairing not in INTENT_PAIRS:
        raise InterpError(f"unknown pairing {pairing!r}; valid: {', '.join(INTENT_PAIRS)}")
    src, tgt = INTENT_PAIRS[pairing]
    n_layers = model.cfg.n_layers
    source = data.runs[src].capture("blocks.*.hook_attn_out")
    ld_src, ld_tgt = data.ld(src).mean(), data.ld(tgt).mean()
    if abs(ld_src - ld_tgt) < 1e-6:
        raise InterpError("the two intents give the same answers: there is no effect to localise")
    runs: list[dict[str, Any]] = []
    bar = logs.progress(desc=f"localising ({pairing})", enabled=progress, unit="run")

    def recovery(layers: list[int]) -> float:
        def iv(index: np.ndarray) -> dict[str, Any]:
            sites = [f"blocks.{layer}.hook_attn_out" for layer in layers]
            return {s: set_value(source[s][index][:, None], positions=-1) for s in sites}

        r = float((data.ld(tgt, iv).mean() - ld_tgt) / (ld_src - ld_tgt)) if layers else 0.0
        runs.append({"layers": list(layers), "recovery": r})
        bar.update()
        return r

    full = recovery(list(range(n_layers)))  # a self-check: exactly 1 (see the module doc)
    layers = search_layers(recovery, n_layers, threshold)
    final = recovery(layers)
    single = [recovery([layer]) for layer in range(n_layers)] if single_layers else []
    bar.close()
    return Localisation(pairing, layers, final, single, full, runs)


# -- 3. directions ----------------------------------------------------------------------------------
def last_token_states(data: IntentRuns, layer: int) -> dict[str, torch.Tensor]:
    """``blocks.{layer}.hook_resid_post`` at the last token, per intent: ``[items, d_model]``."""
    site = f"blocks.{layer}.hook_resid_post"
    return {intent: data.runs[intent].capture(site)[site] for intent in ("prior", "context")}


def train_das(model: Model, data: IntentRuns, layer: int, states: dict[str, torch.Tensor], *,
              steps: int = 200, lr: float = 0.05, seed: int = 0, progress: bool = True) -> torch.Tensor:
    """Rank-1 DAS: a unit ``u`` such that interchanging ``u.h`` at ``layer``'s output (last token)
    from one intent's prompt into the same item's other-intent prompt makes the model give the
    answer the source intent asks for."""
    site = f"blocks.{layer}.hook_resid_post"
    rng = np.random.default_rng(seed)
    u_now: list[torch.Tensor] = []
    streams = {}
    for tgt, src in (("prior", "context"), ("context", "prior")):
        def iv(index: np.ndarray, src: str = src) -> dict[str, Any]:
            h_src = states[src][index][:, None].double()
            return {site: Intervention(lambda x, _: interchange(x.double(), h_src.to(x.device), u_now[0]), positions=-1)}
        streams[tgt] = data.runs[tgt].training_steps(iv, rng)
    bar = logs.progress(total=steps, desc=f"rank-1 DAS at layer {layer}", enabled=progress)

    def loss(u: torch.Tensor) -> torch.Tensor:
        u_now[:] = [u]
        tgt = "prior" if rng.random() < 0.5 else "context"
        logits = next(streams[tgt])
        label = torch.full((len(logits),), 0 if tgt == "context" else 1)  # the source intent's answer
        bar.update()
        return torch.nn.functional.cross_entropy(logits.double(), label)

    # Gradients flow to u only: the model's weights would otherwise get (and keep) a .grad each step.
    weights = [p for p in model.hf.parameters() if p.requires_grad]
    for p in weights:
        p.requires_grad_(False)
    try:
        u = fit_rank1_das(loss, model.cfg.d_model, steps=steps, lr=lr, seed=seed,
                          init=_random_unit(model.cfg.d_model, seed))
    finally:
        for p in weights:
            p.requires_grad_(True)
        bar.close()
    return u


def _random_unit(d: int, seed: int) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(10_000 + seed), dtype=torch.float64)
    return v / v.norm()


def oriented(u: torch.Tensor, states: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float, float]:
    """``u`` signed so the context intent projects higher; the midpoint and half-gap of the two
    intents' mean projections."""
    u = u.double() / u.double().norm()
    m_ctx, m_pri = (float((states[i].double() @ u).mean()) for i in ("context", "prior"))
    if m_ctx < m_pri:
        u, m_ctx, m_pri = -u, -m_ctx, -m_pri
    return u, (m_ctx + m_pri) / 2, (m_ctx - m_pri) / 2


# -- 4. the knob ------------------------------------------------------------------------------------
def sweep(data: IntentRuns, layer: int, u: torch.Tensor, mid: float, step: float, ks=SWEEP_K) -> list[dict[str, Any]]:
    """For each ``k``: the share of each intent's prompts answered from the context with
    ``u.h`` set to ``mid + k * step`` at ``layer``'s output (last token)."""
    site = f"blocks.{layer}.hook_resid_post"
    rows = []
    for k in ks:
        iv = {site: steer(u, value=mid + k * step, positions=-1)}
        row: dict[str, Any] = {"k": float(k), "value": mid + k * step}
        for intent in ("prior", "context"):
            row[f"context_share_{intent}"] = float((data.ld(intent, iv) > 0).mean())
            row[f"ld_{intent}"] = float(data.ld(intent, iv).mean())
        rows.append(row)
    return rows


def flip_rate(data: IntentRuns, layer: int, u: torch.Tensor, mid: float, step: float,
              base: dict[str, np.ndarray], k: float = STEER_K) -> float:
    """Share of prompts not already answered as steered that switch when ``u.h`` is set to
    ``mid + k * step`` (towards the context) or ``mid - k * step`` (towards the prior)."""
    site = f"blocks.{layer}.hook_resid_post"
    flips = cases = 0
    for sign, to_context in ((+1, True), (-1, False)):
        iv = {site: steer(u, value=mid + sign * k * step, positions=-1)}
        for intent in ("prior", "context"):
            before = base[intent] > 0
            after = data.ld(intent, iv) > 0
            eligible = before != to_context
            cases += int(eligible.sum())
            flips += int((after[eligible] == to_context).sum())
    return flips / cases if cases else float("nan")


def separation_accuracy_r(states: dict[str, torch.Tensor], u: torch.Tensor, base: dict[str, np.ndarray]) -> float:
    """Pearson r over items between ``u.h(context) - u.h(prior)`` and the share of the item's two
    prompts answered as the intent asks."""
    sep = (states["context"].double() @ u - states["prior"].double() @ u).numpy()
    acc = ((base["context"] > 0).astype(float) + (base["prior"] < 0).astype(float)) / 2
    if sep.std() == 0 or acc.std() == 0:
        return float("nan")
    return float(np.corrcoef(sep, acc)[0, 1])


# -- the whole analysis ------------------------------------------------------------------------------
def knob(model: Model, *, n_items: int = 200, test_share: float = 0.5, seed: int = 0, threshold: float = 0.8,
         layer: int | None = None, das_steps: int = 200, n_random: int = 3, min_das_items: int = 16,
         batch_size: int = 16, progress: bool = True) -> KnobResult:
    """Run the whole context-knob analysis on ``model`` (see the module doc).

    Args:
        n_items: counterfactual items (``test_share`` of them held out for testing).
        test_share: the share of items held out for testing.
        seed: seed of the item sample and of DAS, so a rerun gives the same numbers.
        threshold: recovery (0..1] of the logit difference the localised layers must reach.
        layer: layer of the subspace (default: the last localised layer).
        das_steps: training steps of the rank-1 DAS direction.
        n_random: random directions for the baseline.
        min_das_items: DAS trains on the items answered right under both intents when at least
            this many are, else on all.
        batch_size: prompts per forward pass.
        progress: show progress bars.

    Returns:
        A ``KnobResult``.

    >>> result = interp.probes.knob(model, n_items=200)                         # doctest: +SKIP
    >>> result.accuracy, result.layers, result.flip_rates, result.random_flip_rate  # doctest: +SKIP
    """
    if not 0 < test_share < 1:
        raise InterpError(f"test_share must be between 0 and 1, got {test_share}")
    if not 0 < threshold <= 1:
        raise InterpError(f"threshold must lie in (0, 1] (a share of the logit difference recovered), got {threshold}")
    for value, what, low in ((n_items, "n_items", 2), (das_steps, "das_steps", 1), (n_random, "n_random", 1),
                             (batch_size, "batch_size", 1), (min_das_items, "min_das_items", 1)):
        if value < low:
            raise InterpError(f"{what} must be at least {low}, got {value}")
    if layer is not None:
        model.check_layer(layer)
    items = knob_items(n_items, seed=seed)
    n_test = max(1, round(n_items * test_share))
    train_items, test_items = items[n_test:], items[:n_test]
    if not train_items:
        raise InterpError(f"{n_items} items leave none for training; ask for more items")
    train, test = IntentRuns(model, train_items, batch_size=batch_size), IntentRuns(model, test_items, batch_size=batch_size)
    base_test = {i: test.ld(i) for i in ("prior", "context")}
    base_train = {i: train.ld(i) for i in ("prior", "context")}
    acc = accuracy({i: np.concatenate([base_test[i], base_train[i]]) for i in base_test})

    loc = {p: localise(model, train, p, threshold=threshold, progress=progress) for p in INTENT_PAIRS}
    layers = sorted(set(loc["CP"].layers) | set(loc["PC"].layers))
    chosen = max(layers) if layer is None else layer

    states_train = last_token_states(train, chosen)
    right = (base_train["prior"] < 0) & (base_train["context"] > 0)
    das_data, das_states = train, states_train
    if right.sum() >= min_das_items:  # the paper trains on items right under both intents
        keep = np.flatnonzero(right)
        das_data = IntentRuns(model, [train_items[i] for i in keep], batch_size=batch_size)
        das_states = {k: v[keep] for k, v in states_train.items()}
    u_das = train_das(model, das_data, chosen, das_states, steps=das_steps, seed=seed, progress=progress)
    u_dm = torch.as_tensor(diff_of_means(torch.cat([states_train["context"], states_train["prior"]]).numpy(),
                                         np.r_[np.ones(len(train_items)), np.zeros(len(train_items))]))
    states_test = last_token_states(test, chosen)
    directions, flips, sweeps, corr = {}, {}, [], {}
    for name, raw in {"das": u_das, "diff_means": u_dm}.items():
        u, mid, half = oriented(raw, states_train)
        directions[name] = u
        flips[name] = flip_rate(test, chosen, u, mid, half, base_test)
        sweeps += [{"method": name, **row} for row in sweep(test, chosen, u, mid, half)]
        corr[name] = separation_accuracy_r(states_test, u, base_test)
    _, _, das_half = oriented(u_das, states_train)
    randoms = []
    for r in range(n_random):
        u, mid, _ = oriented(_random_unit(model.cfg.d_model, seed + 1 + r), states_train)
        directions[f"random{r}"] = u
        randoms.append(flip_rate(test, chosen, u, mid, das_half, base_test))
        if r == 0:
            sweeps += [{"method": "random", **row} for row in sweep(test, chosen, u, mid, das_half)]
    settings = dict(n_items=n_items, test_items=n_test, seed=seed, threshold=threshold, das_steps=das_steps,
                    n_random=n_random, steer_k=STEER_K, site=f"blocks.{chosen}.hook_resid_post", position="last")
    return KnobResult(model.name, settings, acc, loc, layers, chosen, directions, flips, randoms, corr, sweeps,
                      int(len(das_data.items)), items)

