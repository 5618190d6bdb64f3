"""``scan``: how strongly every attention head behaves as each known head type.

Pattern scores run on kernel statistics computed inside the forward pass (no eager
attention, no stored patterns): on repeated random tokens (Olsson et al.'s protocol) and,
separately, on windows of natural text, where the n-gram scores live too.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from interp import logs
from interp.core.model import Model
from interp.errors import PromptTooLongError, SettingError, UnknownNameError, check_seed, whole_number
from interp.heads.causal import masking_pool
from interp.heads.checkpoint import Checkpoint, fingerprint
from interp.heads.compression import sliding_windows
from interp.heads.retrieval import needle_tests
from interp.heads.sequences import bos_id, shipped_text_ids
from interp.heads.settings import (
    PATTERN_SCORES,
    RANDOM_SCORES,
    SCAN_DEFAULTS,
    SCORES,
    STREAMING_DEFAULTS,
    TEXT_SCORES,
    RetrievalSettings,
)
from interp.heads.table import HeadScores
from interp.heads.units import ScanUnits
from interp.results.versions import versions as _versions

if TYPE_CHECKING:
    from interp.heads.retrieval import NeedleTest


def check_scores(names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    for name in names:
        if name not in SCORES:
            raise UnknownNameError("score", name, SCORES)
    return names


@dataclass
class ScanPlan:
    """Checked scan settings, and the needle tests when retrieval is scored."""

    names: list[str]
    settings: dict[str, Any]
    needle_tests: list[NeedleTest] | None = None
    # the model's kv heads and sliding-window layers, recorded with the scores for KV-cache patterns
    layout: dict[str, Any] | None = None


def _at_least(value: Any, low: int, what: str) -> None:
    whole_number(value, low, what, SettingError)


def _retrieval_settings(model: Model, retrieval: dict[str, Any] | None, causal_checks: bool) -> dict[str, Any]:

    valid = [f.name for f in fields(RetrievalSettings)]
    for key in retrieval or {}:
        if key not in valid:
            raise UnknownNameError("retrieval setting", key, valid)
    cfg = RetrievalSettings(**(retrieval or {})).as_dict()
    if not cfg["lengths"] or not cfg["depths"]:
        raise SettingError("retrieval needs at least one haystack length and one depth")
    for length in cfg["lengths"]:
        _at_least(length, 1, "a retrieval length")
    longest = max(cfg["lengths"])
    if longest > model.cfg.n_ctx:
        raise PromptTooLongError(
            f"needle haystacks of {longest} tokens exceed {model.name}'s context window of {model.cfg.n_ctx}"
        )
    bad = [d for d in cfg["depths"] if not 0.0 <= float(d) <= 1.0]
    if bad:
        raise SettingError(f"needle depths must lie in 0..1 (0: start, 1: end); got {bad}")
    _at_least(cfg["max_new_tokens"], 1, "max_new_tokens")
    if causal_checks:
        pool = masking_pool(model.cfg.n_layers * model.cfg.n_heads)
        if not isinstance(cfg["mask_k"], numbers.Integral) or not 1 <= int(cfg["mask_k"]) <= pool:
            raise SettingError(
                f"the retrieval masking check masks mask_k heads and as many random ones from {pool} heads "
                f"outside the top; {model.name} allows mask_k 1..{pool}, got {cfg['mask_k']!r}"
            )
        if not cfg["mask_seeds"]:
            raise SettingError("the retrieval masking check needs at least one seed (mask_seeds)")
    return cfg


def _streaming_settings(model: Model, streaming: dict[str, Any] | None) -> dict[str, int]:
    for key in streaming or {}:
        if key not in STREAMING_DEFAULTS:
            raise UnknownNameError("streaming setting", key, list(STREAMING_DEFAULTS))
    cfg = {**STREAMING_DEFAULTS, **{k: v for k, v in (streaming or {}).items() if v is not None}}
    if (streaming or {}).get("tokens") is None:  # the default length, or the model's window if shorter
        cfg["tokens"] = min(cfg["tokens"], model.cfg.n_ctx)
    _at_least(cfg["sink"], 0, "the streaming sink")
    _at_least(cfg["window"], 1, "the streaming window")
    _at_least(cfg["tokens"], 2, "the streaming text length (tokens)")
    _at_least(cfg["samples"], 1, "the streaming text samples")
    if cfg["sink"] + cfg["window"] >= cfg["tokens"]:
        raise SettingError(
            f"a sink of {cfg['sink']} and a window of {cfg['window']} cover every key of a {cfg['tokens']}-token text, "
            f"so the streaming score would be 1 for every head; use more than {cfg['sink'] + cfg['window']} tokens "
            "or a smaller window")
    shipped_text_ids(model, cfg["tokens"], "streaming texts")
    return {k: int(v) for k, v in cfg.items()}


def plan_scan(
    model: Model,
    scores: Sequence[str] = PATTERN_SCORES,
    *,
    lengths: Sequence[int] = SCAN_DEFAULTS["lengths"],
    samples: int = SCAN_DEFAULTS["samples"],
    text_tokens: int = SCAN_DEFAULTS["text_tokens"],
    text_samples: int = SCAN_DEFAULTS["text_samples"],
    seed: int = 0,
    exclude_bos: bool = False,
    exclude_current: bool = False,
    batch_size: int = 4,
    retrieval: dict[str, Any] | None = None,
    streaming: dict[str, Any] | None = None,
    causal_checks: bool = True,
) -> ScanPlan:
    """Check every setting of a ``scan`` against ``model`` before any work, and build the
    needle tests: unknown scores, lengths beyond the context window, a text window longer
    than the window or the shipped text, a needle whose answer cannot be located after
    tokenisation all raise here (``InterpError``). ``scan`` calls it first; the CLI calls it
    for every model before it scans any.

    Args:
        samples: sequences of each length.
        text_tokens: tokens per window of natural text.
        text_samples: windows of natural text.
        seed: seed of the random sequences and text windows.
        exclude_bos: leave the first key out of the scores.
        exclude_current: leave each row's own position out of the scores.
        batch_size: sequences per forward pass.
        retrieval: settings of the needle tests (``interp.heads.settings.RetrievalSettings``).
        streaming: settings of the ``streaming`` score (``sink``, ``window``, ``tokens``, ``samples``).
        causal_checks: whether the causal checks will run (their settings are checked too).

    Returns:
        The checked settings (a dict) and the needle tests when retrieval is scored, as ``scan`` uses them.
    """
    names = check_scores(scores)
    seed = check_seed(seed)
    random_wanted = any(n in names for n in RANDOM_SCORES)
    text_wanted = any(n in names for n in TEXT_SCORES)
    lengths = [int(x) for x in lengths]
    if random_wanted:
        if not lengths:
            raise SettingError("at least one repeated-sequence length is needed")
        for length in lengths:
            _at_least(length, 1, "a repeated-sequence length")
        need = 2 * max(lengths) + (bos_id(model) is not None)
        if need > model.cfg.n_ctx:
            raise PromptTooLongError(
                f"length {max(lengths)} needs {need} tokens but {model.name}'s context window is {model.cfg.n_ctx}"
            )
        _at_least(samples, 1, "samples")
    if text_wanted:
        _at_least(text_tokens, 1, "text_tokens")
        _at_least(text_samples, 1, "text_samples")
        shipped_text_ids(model, text_tokens, "natural-text windows (text_tokens)")
    if random_wanted or text_wanted or "streaming" in names:
        _at_least(batch_size, 1, "batch_size")
    settings: dict[str, Any] = {
        "scores": names, "lengths": lengths, "samples": samples, "text_tokens": text_tokens,
        "text_samples": text_samples, "seed": seed, "exclude_bos": exclude_bos,
        "exclude_current": exclude_current, "batch_size": batch_size,
    }
    if "streaming" in names:
        settings["streaming"] = _streaming_settings(model, streaming)
    tests = None
    if "retrieval" in names:

        settings["retrieval"] = _retrieval_settings(model, retrieval, causal_checks)
        tests = needle_tests(model, settings["retrieval"])  # every answer located before any work

    layout = {"kv_heads": model.cfg.n_kv_heads, "sliding_windows": sliding_windows(model)}
    return ScanPlan(names, settings, tests, layout)


def scan(
    model: Model,
    scores: Sequence[str] = PATTERN_SCORES,
    *,
    lengths: Sequence[int] = SCAN_DEFAULTS["lengths"],
    samples: int = SCAN_DEFAULTS["samples"],
    text_tokens: int = SCAN_DEFAULTS["text_tokens"],
    text_samples: int = SCAN_DEFAULTS["text_samples"],
    seed: int = 0,
    exclude_bos: bool = False,
    exclude_current: bool = False,
    batch_size: int = 4,
    retrieval: dict[str, Any] | None = None,
    streaming: dict[str, Any] | None = None,
    causal_checks: bool = True,
    checkpoint: str | None = None,
    progress: bool = True,
) -> HeadScores:
    """Score every head of ``model``; returns a ``HeadScores`` table.

    ``scores`` from ``SCORES``; only those asked for are computed. Repeated random sequences
    (``samples`` of each of ``lengths``, seeded): ``prev_token`` over all rows, ``duplicate``
    and ``induction`` over the second copy. Natural text (``text_samples`` windows of
    ``text_tokens`` tokens of the shipped public-domain text): ``prev_token_text``,
    ``duplicate_text``, ``induction_text``, and ``ngram`` (the n-gram scores
    ``ngram1``..``ngram4``). ``exclude_bos``/``exclude_current`` as in
    TransformerLens's ``detect_head``. ``retrieval`` passes settings to
    ``interp.heads.retrieval.retrieval_scores``. ``streaming`` (``sink``, ``window``, ``tokens``,
    ``samples``; defaults in ``STREAMING_DEFAULTS``): the ``streaming`` score, each head's
    attention mass on its first ``sink`` and last ``window`` keys in long natural text (near 1:
    the head would lose little on a sink + window KV cache). With ``causal_checks`` the induction and
    retrieval labels are tested by ablation. ``checkpoint``: a folder for partial results, so
    an interrupted scan resumes. Every setting is checked (``plan_scan``) before any work
    starts or the checkpoint folder is created.

    Args:
        seed: seed of the random sequences, text windows and causal checks' random heads.
        batch_size: sequences per forward pass.
        progress: show a progress bar.

    >>> scores = scan(interp.load("smollm2-135m"), ["induction", "prev_token"])  # doctest: +SKIP
    >>> scores.top("induction", 5)                                               # doctest: +SKIP
    """
    plan = plan_scan(
        model, scores, lengths=lengths, samples=samples, text_tokens=text_tokens, text_samples=text_samples,
        seed=seed, exclude_bos=exclude_bos, exclude_current=exclude_current, batch_size=batch_size,
        retrieval=retrieval, streaming=streaming, causal_checks=causal_checks,
    )
    ckpt = Checkpoint(checkpoint, fingerprint(model, {"model": model.name, **plan.settings}) if checkpoint else {})
    units = ScanUnits(model.name, (model.cfg.n_layers, model.cfg.n_heads), plan, ckpt, _versions(), causal_checks)
    for key in logs.progress(units.keys(1), "head scan", progress):
        if not units.done(key):
            units.save(key, units.run(model, key))
    if causal_checks:
        table = units.scores()
        for key in units.keys(2):
            if not units.done(key):
                units.save(key, units.run(model, key, table, progress=progress))
    return units.report()
