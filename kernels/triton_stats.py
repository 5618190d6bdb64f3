"""Triton implementation of ``attention_stats`` for CUDA (and ``TRITON_INTERPRET=1`` on the CPU).

One program handles a block of query rows of one batch item for all query heads that share a
kv head, so each key tile is loaded once per group. It streams over key blocks with an online
softmax (running max ``m`` and normaliser ``l``), rescaling every accumulator when ``m``
grows: the rule masses, ``Σ p·s`` for the entropy, the arg-max, and a running top-k merged
with each block. The target rules are evaluated in the kernel from token ids.
"""

from __future__ import annotations

import torch

from interp.errors import MissingDependencyError
from interp.kernels.targets import RULES, masked_tokens

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is missing
    triton = None


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


if triton is not None:

    @triton.jit
    def _tanh(x):
        return 2.0 * tl.sigmoid(2.0 * x) - 1.0

    @triton.jit
    def _accumulate(acc, count, target, p, alpha):
        """Rescale a rule's running mass to the new row maximum and add this block's targets."""
        return acc * alpha + tl.sum(tl.where(target, p, 0.0), axis=1), count + tl.sum(target.to(tl.int32), axis=1)

    @triton.jit
    def _store_rule(mass_ptr, count_ptr, i, acc, count, l_i, out, cout, mass_stride, count_stride, valid_m, cmask):
        tl.store(mass_ptr + i * mass_stride + out, acc / l_i, mask=valid_m)
        tl.store(count_ptr + i * count_stride + cout, count, mask=cmask)

    @triton.jit
    def _stats_kernel(
        q_ptr, k_ptr, tok_ptr, rows_ptr, span_ptr, first_ptr, kmask_ptr,
        lse_ptr, maxp_ptr, argmax_ptr, ent_ptr, topv_ptr, topi_ptr, mass_ptr, count_ptr,
        sqb, sqh, sqp, skb, skh, skp,
        B, H, HKV, PQ, PK, R, D,
        scaling, softcap, window,
        G: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, DP: tl.constexpr,
        TOPK: tl.constexpr, KP: tl.constexpr, ROW_STATS: tl.constexpr,
        HAS_SOFTCAP: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_KMASK: tl.constexpr, CAUSAL: tl.constexpr,
        R_PREV: tl.constexpr, R_DUP: tl.constexpr, R_NG1: tl.constexpr, R_NG2: tl.constexpr,
        R_NG3: tl.constexpr, R_NG4: tl.constexpr, R_SPAN: tl.constexpr, R_BOS: tl.constexpr,
        R_SELF: tl.constexpr, GP: tl.constexpr, EXCL_BOS: tl.constexpr, EXCL_SELF: tl.constexpr,
    ):
        BLOCK_M: tl.constexpr = GP * BLOCK_R
        pid_r = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // HKV
        kvh = pid_bh % HKV

        offs_m = tl.arange(0, BLOCK_M)
        g = offs_m // BLOCK_R
        r = pid_r * BLOCK_R + offs_m % BLOCK_R
        valid_m = (g < G) & (r < R)
        head = kvh * G + g
        row = tl.load(rows_ptr + b * R + r, mask=valid_m, other=0)
        q_abs = row + (PK - PQ)
        offs_d = tl.arange(0, DP)
        q = tl.load(
            q_ptr + b * sqb + head[:, None] * sqh + row[:, None] * sqp + offs_d[None, :],
            mask=valid_m[:, None] & (offs_d[None, :] < D), other=0.0,
        ).to(tl.float32)

        # Row tokens ending at the query, for duplicate and n-gram rules (-1 before the start).
        t0 = tl.load(tok_ptr + b * PK + q_abs, mask=valid_m, other=-1)
        t1 = tl.load(tok_ptr + b * PK + q_abs - 1, mask=valid_m & (q_abs >= 1), other=-2)
        t2 = tl.load(tok_ptr + b * PK + q_abs - 2, mask=valid_m & (q_abs >= 2), other=-3)
        t3 = tl.load(tok_ptr + b * PK + q_abs - 3, mask=valid_m & (q_abs >= 3), other=-4)
        span_lo = tl.load(span_ptr + (b * R + r) * 2, mask=valid_m & R_SPAN, other=0)
        span_hi = tl.load(span_ptr + (b * R + r) * 2 + 1, mask=valid_m & R_SPAN, other=0)
        first = tl.load(first_ptr + b)

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        e_i = tl.zeros([BLOCK_M], tl.float32)
        best = tl.full([BLOCK_M], float("-inf"), tl.float32)
        best_i = tl.zeros([BLOCK_M], tl.int32)
        a_prev = tl.zeros([BLOCK_M], tl.float32)
        a_dup = tl.zeros([BLOCK_M], tl.float32)
        a_ng1 = tl.zeros([BLOCK_M], tl.float32)
        a_ng2 = tl.zeros([BLOCK_M], tl.float32)
        a_ng3 = tl.zeros([BLOCK_M], tl.float32)
        a_ng4 = tl.zeros([BLOCK_M], tl.float32)
        a_span = tl.zeros([BLOCK_M], tl.float32)
        a_bos = tl.zeros([BLOCK_M], tl.float32)
        a_self = tl.zeros([BLOCK_M], tl.float32)
        c_prev = tl.zeros([BLOCK_M], tl.int32)
        c_dup = tl.zeros([BLOCK_M], tl.int32)
        c_ng1 = tl.zeros([BLOCK_M], tl.int32)
        c_ng2 = tl.zeros([BLOCK_M], tl.int32)
        c_ng3 = tl.zeros([BLOCK_M], tl.int32)
        c_ng4 = tl.zeros([BLOCK_M], tl.int32)
        c_span = tl.zeros([BLOCK_M], tl.int32)
        c_bos = tl.zeros([BLOCK_M], tl.int32)
        c_self = tl.zeros([BLOCK_M], tl.int32)
        offs_kp = tl.arange(0, KP)
        top_v = tl.full([BLOCK_M, KP], float("-inf"), tl.float32)
        top_i = tl.zeros([BLOCK_M, KP], tl.int32)

        # Only key blocks some row of this block can see.
        if CAUSAL:
            hi = tl.max(tl.where(valid_m, q_abs, 0), axis=0) + 1
        else:
            hi = PK
        lo = 0
        if HAS_WINDOW:
            lo = tl.maximum(tl.min(tl.where(valid_m, q_abs, PK), axis=0) - window + 1, 0)
            lo = (lo // BLOCK_N) * BLOCK_N
        for n0 in range(lo, hi, BLOCK_N):
            keys = n0 + tl.arange(0, BLOCK_N)
            in_k = keys < PK
            k = tl.load(
                k_ptr + b * skb + kvh * skh + keys[:, None] * skp + offs_d[None, :],
                mask=in_k[:, None] & (offs_d[None, :] < D), other=0.0,
            ).to(tl.float32)
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * scaling
            if HAS_SOFTCAP:
                s = _tanh(s / softcap) * softcap
            vis = valid_m[:, None] & in_k[None, :]
            if CAUSAL:
                vis = vis & (keys[None, :] <= q_abs[:, None])
            if HAS_WINDOW:
                vis = vis & (q_abs[:, None] - keys[None, :] < window)
            if HAS_KMASK:
                km = tl.load(kmask_ptr + b * PK + keys, mask=in_k, other=0)
                vis = vis & (km[None, :] != 0)
            s = tl.where(vis, s, float("-inf"))

            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            p = tl.where(vis, tl.exp(s - m_safe[:, None]), 0.0)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if ROW_STATS:
                e_i = e_i * alpha + tl.sum(tl.where(vis, p * s, 0.0), axis=1)
                bmax = tl.max(s, axis=1)
                bidx = tl.argmax(s, axis=1).to(tl.int32) + n0
                better = bmax > best
                best_i = tl.where(better, bidx, best_i)
                best = tl.where(better, bmax, best)
                if TOPK > 0:
                    # Merge the running top-k with this block: pick the larger head of either list, K times.
                    cand = s
                    old_v = top_v
                    new_v = tl.full([BLOCK_M, KP], float("-inf"), tl.float32)
                    new_i = tl.zeros([BLOCK_M, KP], tl.int32)
                    for t in tl.static_range(TOPK):
                        cv = tl.max(cand, axis=1)
                        ci = tl.argmax(cand, axis=1).to(tl.int32)
                        ov = tl.max(old_v, axis=1)
                        oi = tl.argmax(old_v, axis=1).to(tl.int32)
                        take_old = ov >= cv
                        old_idx = tl.sum(tl.where(offs_kp[None, :] == oi[:, None], top_i, 0), axis=1)
                        pick_v = tl.where(take_old, ov, cv)
                        pick_i = tl.where(take_old, old_idx, ci + n0)
                        new_v = tl.where(offs_kp[None, :] == t, pick_v[:, None], new_v)
                        new_i = tl.where(offs_kp[None, :] == t, pick_i[:, None], new_i)
                        old_v = tl.where(take_old[:, None] & (offs_kp[None, :] == oi[:, None]), float("-inf"), old_v)
                        cand = tl.where(
                            (~take_old)[:, None] & (tl.arange(0, BLOCK_N)[None, :] == ci[:, None]),
                            float("-inf"), cand,
                        )
                    top_v = new_v
                    top_i = new_i
            m_i = m_new

            # Rule masses: targets are evaluated on the fly from positions and tokens.
            kk = keys[None, :]
            qa = q_abs[:, None]
            cand = vis  # keys that may be targets of the rules other than bos and self
            if EXCL_BOS:
                cand = cand & (kk != first)
            if EXCL_SELF:
                cand = cand & (kk != qa)
            if R_PREV:
                tgt = cand & (kk == qa - 1)
                a_prev, c_prev = _accumulate(a_prev, c_prev, tgt, p, alpha)
            if R_SELF:
                tgt = vis & (kk == qa)
                a_self, c_self = _accumulate(a_self, c_self, tgt, p, alpha)
            if R_BOS:
                tgt = vis & (kk == first)
                a_bos, c_bos = _accumulate(a_bos, c_bos, tgt, p, alpha)
            if R_SPAN:
                tgt = cand & (kk >= span_lo[:, None]) & (kk < span_hi[:, None])
                a_span, c_span = _accumulate(a_span, c_span, tgt, p, alpha)
            if R_DUP:
                kt = tl.load(tok_ptr + b * PK + keys, mask=in_k, other=-5)
                tgt = cand & (kk < qa) & (kt[None, :] == t0[:, None])
                a_dup, c_dup = _accumulate(a_dup, c_dup, tgt, p, alpha)
            if R_NG1 or R_NG2 or R_NG3 or R_NG4:
                k1 = tl.load(tok_ptr + b * PK + keys - 1, mask=in_k & (keys >= 1), other=-6)
                match = cand & (kk - 1 < qa) & (k1[None, :] == t0[:, None])
                if R_NG1:
                    a_ng1, c_ng1 = _accumulate(a_ng1, c_ng1, match, p, alpha)
                k2 = tl.load(tok_ptr + b * PK + keys - 2, mask=in_k & (keys >= 2), other=-7)
                match = match & (k2[None, :] == t1[:, None])
                if R_NG2:
                    a_ng2, c_ng2 = _accumulate(a_ng2, c_ng2, match, p, alpha)
                k3 = tl.load(tok_ptr + b * PK + keys - 3, mask=in_k & (keys >= 3), other=-8)
                match = match & (k3[None, :] == t2[:, None])
                if R_NG3:
                    a_ng3, c_ng3 = _accumulate(a_ng3, c_ng3, match, p, alpha)
                k4 = tl.load(tok_ptr + b * PK + keys - 4, mask=in_k & (keys >= 4), other=-9)
                match = match & (k4[None, :] == t3[:, None])
                if R_NG4:
                    a_ng4, c_ng4 = _accumulate(a_ng4, c_ng4, match, p, alpha)

        lse = m_i + tl.log(l_i)
        out = (b * H + head) * R + r
        tl.store(lse_ptr + out, lse, mask=valid_m)
        if ROW_STATS:
            tl.store(maxp_ptr + out, tl.exp(best - lse), mask=valid_m)
            tl.store(argmax_ptr + out, best_i.to(tl.int64), mask=valid_m)
            tl.store(ent_ptr + out, lse - e_i / l_i, mask=valid_m)
            if TOPK > 0:
                tmask = valid_m[:, None] & (offs_kp[None, :] < TOPK)
                tl.store(topv_ptr + out[:, None] * TOPK + offs_kp[None, :], tl.exp(top_v - lse[:, None]), mask=tmask)
                tl.store(topi_ptr + out[:, None] * TOPK + offs_kp[None, :], top_i.to(tl.int64), mask=tmask)
        stride = B * H * R
        cout = b * R + r
        cmask = valid_m & (g == 0)  # counts are per row, not per head
        if R_PREV:
            _store_rule(mass_ptr, count_ptr, 0, a_prev, c_prev, l_i, out, cout, stride, B * R, valid_m, cmask)
        if R_DUP:
            _store_rule(mass_ptr, count_ptr, 1, a_dup, c_dup, l_i, out, cout, stride, B * R, valid_m, cmask)
        if R_NG1:
            _store_rule(mass_ptr, count_ptr, 2, a_ng1, c_ng1, l_i, out, cout, stride, B * R, valid_m, cmask)
        if R_NG2:
            _store_rule(mass_ptr, count_ptr, 3, a_ng2, c_ng2, l_i, out, cout, stride, B * R, valid_m, cmask)
        if R_NG3:
            _store_rule(mass_ptr, count_ptr, 4, a_ng3, c_ng3, l_i, out, cout, stride, B * R, valid_m, cmask)
        if R_NG4:
            _store_rule(mass_ptr, count_ptr, 5, a_ng4, c_ng4, l_i, out, cout, stride, B * R, valid_m, cmask)
        if R_SPAN:
            _store_rule(mass_ptr, count_ptr, 6, a_span, c_span, l_i, out, cout, stride, B * R, valid_m, cmask)
        if R_BOS:
            _store_rule(mass_ptr, count_ptr, 7, a_bos, c_bos, l_i, out, cout, stride, B * R, valid_m, cmask)
        if R_SELF:
            _store_rule(mass_ptr, count_ptr, 8, a_self, c_self, l_i, out, cout, stride, B * R, valid_m, cmask)


def triton_attention_stats(problem, rules, tokens, spans, row_stats, topk, exclude=(), block_r=16, block_n=32):
    """Run the kernel on a validated ``Problem``; returns ``AttentionStats``."""
    from interp.kernels.attention_stats import AttentionStats

    if triton is None:
        raise MissingDependencyError("triton", "the Triton attention kernels", "pip install 'interp[gpu]'")
    p = problem
    q, k = p.q, p.k
    b, h, pq, d = q.shape
    hkv, pk = k.shape[1], k.shape[2]
    r = p.rows.shape[1]
    dev = q.device
    q, k = q.contiguous(), k.contiguous()
    if k.stride(3) != 1 or q.stride(3) != 1:  # pragma: no cover - contiguous() guarantees it
        raise ValueError("q and k need a unit stride on the last axis")
    toks = tokens if tokens is not None else torch.zeros(b, pk, dtype=torch.long, device=dev)
    toks = masked_tokens(toks.to(dev).long(), p.key_mask).contiguous()
    rows = p.rows.contiguous()
    span_t = (spans if spans is not None else torch.zeros(b, r, 2, dtype=torch.long)).to(dev).long().contiguous()
    first = (
        p.key_mask.long().argmax(dim=1) if p.key_mask is not None else torch.zeros(b, dtype=torch.long, device=dev)
    ).contiguous()
    kmask = (p.key_mask if p.key_mask is not None else torch.ones(b, pk, dtype=torch.bool, device=dev)).to(torch.int8)

    f32 = dict(dtype=torch.float32, device=dev)
    lse = torch.empty(b, h, r, **f32)
    maxp, ent = torch.empty(b, h, r, **f32), torch.empty(b, h, r, **f32)
    argmax = torch.empty(b, h, r, dtype=torch.long, device=dev)
    kk = max(topk, 1)
    topv = torch.empty(b, h, r, kk, **f32)
    topi = torch.empty(b, h, r, kk, dtype=torch.long, device=dev)
    mass = torch.zeros(len(RULES), b, h, r, **f32)
    count = torch.zeros(len(RULES), b, r, dtype=torch.int32, device=dev)
    group = h // hkv
    gp = _next_pow2(group)
    block_r = max(block_r, 16 // gp) if gp < 16 else 1
    block_r = _next_pow2(max(block_r, 1))
    flags = {f"R_{n}": name in rules for n, name in zip(
        ["PREV", "DUP", "NG1", "NG2", "NG3", "NG4", "SPAN", "BOS", "SELF"], RULES, strict=True)}
    grid = (triton.cdiv(r, block_r), b * hkv)
    _stats_kernel[grid](
        q, k, toks, rows, span_t, first, kmask,
        lse, maxp, argmax, ent, topv, topi, mass, count,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        b, h, hkv, pq, pk, r, d,
        float(p.scaling), float(p.softcap or 1.0), int(p.sliding_window or 0),
        G=group, BLOCK_R=block_r, BLOCK_N=block_n, DP=max(16, _next_pow2(d)),
        TOPK=topk if row_stats else 0, KP=max(2, _next_pow2(kk)), ROW_STATS=row_stats,
        HAS_SOFTCAP=p.softcap is not None, HAS_WINDOW=p.sliding_window is not None,
        HAS_KMASK=p.key_mask is not None, CAUSAL=p.causal, GP=gp, EXCL_BOS="bos" in exclude, EXCL_SELF="self" in exclude, **flags,
    )
    out = AttentionStats(rows=p.rows, lse=lse)
    if row_stats:
        out.max_prob, out.argmax, out.entropy = maxp, argmax, ent
        if topk:
            out.topk_prob, out.topk_index = topv, topi
    for i, name in enumerate(RULES):
        if name in rules:
            out.mass[name], out.n_targets[name] = mass[i], count[i].long()
    return out
