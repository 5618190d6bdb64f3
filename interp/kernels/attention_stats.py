"""Per-head attention statistics without building a [pos × pos] matrix per head.

One signature, two implementations: a Triton kernel for CUDA (online softmax over key blocks,
all heads of a layer in one launch, each kv head read once per group) and a PyTorch path for
the CPU that takes the row log-sum-exp from the fused flash kernel when the mask allows and
otherwise from blocks of query rows, so memory stays O(pos × block).

>>> import torch
>>> from interp.kernels import attention_stats
>>> q, k = torch.randn(1, 4, 32, 16), torch.randn(1, 2, 32, 16)      # GQA: 2 query heads per kv head
>>> tokens = torch.randint(0, 5, (1, 32))
>>> s = attention_stats(q, k, scaling=0.25, tokens=tokens, rules=["prev", "ngram1"], topk=2)
>>> s.mass["prev"].shape, s.topk_index.shape
(torch.Size([1, 4, 32]), torch.Size([1, 4, 32, 2]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.errors import BadInputError, OutOfRangeError, UnknownNameError, whole_number
from interp.kernels.problem import AttentionStats, Problem
from interp.kernels.targets import RULES, TOKEN_RULES, RulePlan, plan_rule, rule_pairs

MAX_TOPK = 8


def attention_stats(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    scaling: float,
    rules: Sequence[str] = (),
    tokens: torch.Tensor | None = None,
    spans: torch.Tensor | None = None,
    rows: torch.Tensor | Sequence[int] | None = None,
    key_mask: torch.Tensor | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    causal: bool = True,
    row_stats: bool = True,
    topk: int = 0,
    lse: torch.Tensor | None = None,
    exclude: Sequence[str] = (),
    backend: str = "auto",
    block: int = 128,
    plan: dict[str, RulePlan] | None = None,
) -> AttentionStats:
    """Attention statistics of every head for the chosen query rows.

    Args:
        q, k: queries ``[batch, q_heads, pos_q, d]`` and keys ``[batch, kv_heads, pos_k, d]``
            after rotary and q/k norms; query head h reads kv head ``h // (q_heads/kv_heads)``.
            With ``pos_q < pos_k`` (decoding) query i sits at key position ``i + pos_k - pos_q``.
        scaling: score scale (``d**-0.5`` unless the architecture says otherwise).
        rules: attention masses to return, from ``RULES``: ``prev``, ``dup``, ``ngram1``..``ngram4``
            (the token after an earlier occurrence of the current n-gram; ``ngram1`` is induction),
            ``span`` (keys ``spans[b, r, 0] <= j < spans[b, r, 1]``), ``bos`` (first real key),
            ``self`` (the query's own key).
        tokens: ``[batch, pos_k]`` token ids, needed by ``dup`` and ``ngram*``.
        rows: query indices, shared ``[R]`` or per item ``[batch, R]`` (default: all).
        key_mask: ``[batch, pos_k]``, False for padding keys.
        sliding_window, softcap, causal: the layer's masks and logit soft-capping. With
            ``causal=False`` a query also sees later keys (both backends); a window still bounds
            only how far back it looks (``q - j < sliding_window``).
        row_stats: also return the largest probability, its key, and the entropy; ``topk``
            (at most 8) the top keys with their probabilities. These need a pass over each row.
        lse: the rows' log-sum-exp if already known (e.g. from the model's fused attention).
        exclude: ``"bos"`` and/or ``"self"``: drop the first real key and/or the query's own key
            from the targets of every other rule (TransformerLens's ``exclude_bos`` and
            ``exclude_current_token``); the ``bos`` and ``self`` masses are unaffected.
        backend: ``"auto"`` (Triton on CUDA tensors where Triton is installed, PyTorch otherwise),
            ``"torch"`` or ``"triton"``. On CUDA the PyTorch path takes the rows' log-sum-exp from
            SDPA's fused CUDA kernel where the mask allows (``fused_lse_call``); 16-bit inputs
            are summed in float32 throughout.
        block: query rows per block of the PyTorch path (memory ~ block × pos_k × heads).
        plan: a dict to keep the rules' target layout (PyTorch path) or target counts (Triton
            path) in, filled on first use; pass the same dict to later calls with the same
            tokens, rows, padding and window (e.g. every layer of one forward pass) to reuse it.
    """
    problem = check_problem(q, k, scaling, rules, tokens, spans, rows, key_mask, sliding_window, softcap, causal, topk)
    for name in exclude:
        if name not in ("bos", "self"):
            raise UnknownNameError("exclusion", name, ["bos", "self"])
    backend = choose_backend(backend, is_cuda=q.is_cuda, dtype=q.dtype, head_dim=q.shape[3])
    if backend == "triton":
        from interp.kernels.triton_stats import triton_attention_stats

        return triton_attention_stats(problem, list(rules), tokens, spans, row_stats, topk, tuple(exclude), plan=plan)
    if backend != "torch":
        raise UnknownNameError("backend", backend, ["auto", "torch", "triton"])
    return _torch_stats(problem, list(rules), tokens, spans, row_stats, topk, lse, block, plan, tuple(exclude))


def check_problem(q, k, scaling, rules, tokens, spans, rows, key_mask, sliding_window, softcap, causal,
                  topk) -> Problem:
    """The checked ``Problem`` of ``attention_stats``'s arguments (the benchmarks and tests build one
    too); a bad one raises ``BadInputError`` (a ``ValueError``), an unknown rule ``UnknownNameError``
    and a row outside the queries ``OutOfRangeError``."""
    if q.ndim != 4 or k.ndim != 4:
        raise BadInputError(f"q and k must be [batch, heads, pos, d]; got {tuple(q.shape)} and {tuple(k.shape)}")
    b, h, pq, d = q.shape
    if k.shape[0] != b or k.shape[3] != d or h % k.shape[1]:
        raise BadInputError(f"k {tuple(k.shape)} does not fit q {tuple(q.shape)}: batch and d must match, "
                            "and q heads must be a multiple of kv heads")
    pk = k.shape[2]
    if pq > pk:
        raise BadInputError(f"more queries ({pq}) than keys ({pk})")
    for rule in rules:
        if rule not in RULES:
            raise UnknownNameError("rule", rule, RULES)
    if any(r in TOKEN_RULES for r in rules) and (tokens is None or tuple(tokens.shape) != (b, pk)):
        raise BadInputError(f"rules {[r for r in rules if r in TOKEN_RULES]} need tokens of shape {(b, pk)}")
    if whole_number(topk, 0, "topk") > MAX_TOPK:
        raise BadInputError(f"topk must be between 0 and {MAX_TOPK}, got {topk}")
    if rows is None:
        rows_t = torch.arange(pq, device=q.device).expand(b, pq)
    else:
        rows_t = torch.as_tensor(rows, dtype=torch.long, device=q.device)
        rows_t = rows_t.expand(b, -1) if rows_t.ndim == 1 else rows_t
        bad = rows_t[(rows_t < 0) | (rows_t >= pq)]
        if bad.numel():
            raise OutOfRangeError("row", int(bad[0]), pq)
    if "span" in rules and (spans is None or tuple(spans.shape) != (*rows_t.shape, 2)):
        raise BadInputError(f"rule 'span' needs spans of shape {(*rows_t.shape, 2)} ([start, end) per row)")
    if key_mask is not None:
        key_mask = key_mask.to(q.device).bool()
    return Problem(q, k, float(scaling), rows_t, rows_t + (pk - pq), key_mask, sliding_window, softcap, causal)


def _triton_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def choose_backend(backend: str, *, is_cuda: bool, triton_installed: bool | None = None,
                   dtype: torch.dtype = torch.float32, head_dim: int = 64) -> str:
    """The implementation ``backend`` resolves to: ``"auto"`` is Triton for CUDA tensors the
    kernel takes (``triton_stats.triton_supports``) where Triton is installed, else PyTorch."""
    if backend != "auto":
        return backend
    if not is_cuda:
        return "torch"
    if triton_installed is None:
        triton_installed = _triton_available()
    if not triton_installed:
        return "torch"
    from interp.kernels.triton_stats import triton_supports

    return "triton" if triton_supports(dtype, head_dim) else "torch"


# -- PyTorch path ---------------------------------------------------------------------------------


def _plain_causal(p: Problem) -> bool:
    """Whether a fused SDPA kernel computes exactly these rows' softmax: causal, no soft-cap, no
    window shorter than the keys, no padding, one query per key."""
    return (
        p.causal
        and p.softcap is None
        and (p.sliding_window is None or p.sliding_window >= p.k.shape[2])
        and (p.key_mask is None or bool(p.key_mask.all()))
        and p.q.shape[2] == p.k.shape[2]
    )


def fused_lse_call(p: Problem, device_type: str | None = None) -> tuple[str, tuple, dict] | None:
    """The fused SDPA op that yields the rows' log-sum-exp for ``p``: ``(op name, args, kwargs)``.

    CPU: the flash kernel for the CPU, in float32. CUDA: the flash kernel for float16/bfloat16
    inputs (its log-sum-exp accumulates in float32) with a head size that is a multiple of 8 up
    to 256, else the memory-efficient kernel (float32 inputs, other head sizes). None when no
    fused kernel computes these rows (``_plain_causal``). GQA/MQA keys are repeated per query head;
    the value is the key itself (only the log-sum-exp is read, and no copy is made for it).
    """
    if not _plain_causal(p):
        return None
    device_type = device_type or p.q.device.type
    k = p.k.repeat_interleave(p.group, dim=1) if p.group > 1 else p.k
    d = p.q.shape[3]
    if device_type == "cpu":
        q, k = p.q.float().contiguous(), k.float().contiguous()
        v = k[..., :1].expand(*k.shape[:-1], 8).contiguous()  # a narrow value: only the lse is wanted
        return "_scaled_dot_product_flash_attention_for_cpu", (q, k, v, 0.0, True), {"scale": p.scaling}
    if device_type != "cuda":
        return None
    q, k = p.q.contiguous(), k.to(p.q.dtype).contiguous()
    if q.dtype in (torch.float16, torch.bfloat16) and d % 8 == 0 and d <= 256:
        # (query, key, value, dropout_p, is_causal, return_debug_mask, *, scale)
        return "_scaled_dot_product_flash_attention", (q, k, k, 0.0, True, False), {"scale": p.scaling}
    # (query, key, value, attn_bias, compute_log_sumexp, dropout_p, is_causal, *, scale)
    return "_scaled_dot_product_efficient_attention", (q, k, k, None, True, 0.0, True), {"scale": p.scaling}


def _flash_lse(p: Problem, device_type: str | None = None) -> torch.Tensor | None:
    """Row log-sum-exp [b, H, R] from SDPA's fused kernel (``fused_lse_call``), or None."""
    call = fused_lse_call(p, device_type)
    if call is None:
        return None
    name, args, kwargs = call
    try:
        lse = getattr(torch.ops.aten, name)(*args, **kwargs)[1]
    except (RuntimeError, AttributeError, NotImplementedError):
        return None  # this build or device lacks the kernel, or rejects these inputs: the blocked path
    lse = lse[:, :, : p.q.shape[2]].float()  # the memory-efficient kernel pads rows to a multiple of 32
    return lse.gather(2, p.rows[:, None, :].expand(-1, p.q.shape[1], -1))


def _blocked_rows(p: Problem, row_stats: bool, topk: int, block: int, out: AttentionStats) -> None:
    """Exact softmax over whole rows, ``block`` rows at a time, kv heads shared by their group."""
    b, h, _, d = p.q.shape
    hkv, pk = p.k.shape[1], p.k.shape[2]
    keys = torch.arange(pk, device=p.q.device)
    k = p.k.float()
    for start in range(0, p.rows.shape[1], block):
        rows = p.rows[:, start : start + block]
        q_abs = p.q_abs[:, start : start + block]
        n = rows.shape[1]
        qb = p.q.gather(2, rows[:, None, :, None].expand(b, h, n, d)).float()  # [b, H, n, d], float32 sums
        s = qb.view(b, hkv, p.group * n, d) @ k.transpose(-1, -2)  # each kv head read once per group
        s = p.logits(s.view(b, h, n, pk))
        ok = p.visible(q_abs[:, :, None], keys[None, None, :])  # [b, n, K]
        s = s.masked_fill(~ok[:, None], float("-inf"))
        lse = torch.logsumexp(s, dim=-1)
        out.lse[:, :, start : start + n] = lse
        if row_stats:
            probs = torch.exp(s - lse[..., None])
            top = probs.max(dim=-1)
            out.max_prob[:, :, start : start + n] = top.values  # type: ignore[index]
            out.argmax[:, :, start : start + n] = top.indices  # type: ignore[index]
            plogs = torch.where(probs > 0, probs * s, torch.zeros((), device=s.device))
            out.entropy[:, :, start : start + n] = lse - plogs.sum(-1)  # type: ignore[index]
            if topk:
                tk = probs.topk(topk, dim=-1)
                out.topk_prob[:, :, start : start + n] = tk.values  # type: ignore[index]
                out.topk_index[:, :, start : start + n] = tk.indices  # type: ignore[index]


def _plan(p: Problem, rule: str, tokens, spans, exclude: tuple[str, ...]) -> RulePlan:
    """A rule's visible targets, laid out once: they depend on tokens and masks, not on q or k."""
    pairs = rule_pairs(rule, p.q_abs, tokens=tokens, spans=spans, key_mask=p.key_mask)
    q_abs = p.q_abs[pairs.batch, pairs.row]
    keep = p.visible(q_abs, pairs.key, pairs.batch)
    excludable = rule not in ("bos", "self")
    if "self" in exclude and excludable:
        keep &= pairs.key != q_abs
    if "bos" in exclude and excludable:
        first = p.key_mask.long().argmax(dim=1) if p.key_mask is not None else torch.zeros_like(p.rows[:, 0])
        keep &= pairs.key != first[pairs.batch]
    pairs = pairs.keep(keep)
    return plan_rule(pairs, p.rows, p.q.shape[2], p.k.shape[2])


def _masses(p: Problem, plan: RulePlan, lse: torch.Tensor) -> torch.Tensor:
    """Sum of exp(score − lse) over each row's visible target keys, for every head: [b, H, R]."""
    b, h, pq, d = p.q.shape
    hkv, pk = p.k.shape[1], p.k.shape[2]
    r = p.rows.shape[1]
    # Position-major copies make each query and key one contiguous row to gather.
    q_rows = p.q.float().transpose(1, 2).reshape(b * pq, h * d)
    k_rows = p.k.float().transpose(1, 2).reshape(b * pk, hkv * d)
    lse_rows = lse.transpose(1, 2).reshape(b * r, h)
    mass = torch.zeros(b * r, h, dtype=torch.float32, device=p.q.device)
    for bucket in plan.buckets:
        n, width = bucket.k_index.shape
        qv = q_rows.index_select(0, bucket.q_index).view(n, hkv, p.group, d)
        kv = k_rows.index_select(0, bucket.k_index.reshape(-1)).view(n, width, hkv, d).permute(0, 2, 3, 1)
        dots = (qv @ kv).view(n, h, width)  # each key read once for its group of query heads
        prob = torch.exp(p.logits(dots) - lse_rows.index_select(0, bucket.out)[:, :, None])
        # Padded slots point at an arbitrary key whose exp may overflow: select, never multiply (inf * 0 is NaN).
        mass[bucket.out] = torch.where(bucket.valid[:, None, :], prob, 0.0).sum(-1)
    return mass.view(b, r, h).transpose(1, 2)


def _torch_stats(p, rules, tokens, spans, row_stats, topk, lse, block, plan, exclude) -> AttentionStats:
    b, h = p.q.shape[:2]
    r = p.rows.shape[1]
    dev = p.q.device
    out = AttentionStats(rows=p.rows, lse=torch.empty(b, h, r, device=dev))
    if row_stats:
        out.max_prob, out.entropy = torch.empty(b, h, r, device=dev), torch.empty(b, h, r, device=dev)
        out.argmax = torch.empty(b, h, r, dtype=torch.long, device=dev)
        if topk:
            out.topk_prob = torch.empty(b, h, r, topk, device=dev)
            out.topk_index = torch.empty(b, h, r, topk, dtype=torch.long, device=dev)
    if row_stats:
        _blocked_rows(p, row_stats, topk, block, out)
    else:
        known = lse if lse is not None else _flash_lse(p)
        if known is not None:
            out.lse = known.float()
        else:
            _blocked_rows(p, False, 0, block, out)
    plans = plan if plan is not None else {}
    for rule in rules:
        if rule not in plans:
            plans[rule] = _plan(p, rule, tokens, spans, exclude)
        out.mass[rule], out.n_targets[rule] = _masses(p, plans[rule], out.lse), plans[rule].count
    return out
