"""Triton implementation of ``attention_stats`` for CUDA (and ``TRITON_INTERPRET=1`` on the CPU).

One program of the statistics kernel handles ``BLOCK_M`` (query row, query head) pairs of one
batch item: ``BLOCK_M // G`` rows for all ``G`` query heads that share a kv head, so each key
tile is loaded once per group and no lane idles when ``G`` is not a power of two. It streams
over key blocks with an online softmax in base 2 (running max ``m`` and normaliser ``l``),
rescaling every accumulator when ``m`` grows: the masses of the rules over many keys (dup,
n-gram, span, evaluated per key block from token ids and positions), ``Σ p·s`` for the entropy,
the arg-max, and a running top-k merged with each block. The single-key rules (prev, self, bos)
need only their key's own score, computed after the loop from the row's log-sum-exp. The
number of visible targets per rule and row depends on tokens and masks only: a separate count
kernel computes it once per row (not per head), and once per forward pass through ``plan``.

Everything a launch depends on is derived in one place: :func:`kernel_constexprs` turns the
launch arguments (dtype, head size, group, rules, masks, block configuration) into the kernel's
compile-time constants and launch options, and :func:`prepare_launches` builds the argument
lists from a validated problem. The CUDA path and ``benchmarks/triton_aot.py`` (which compiles
every specialisation for sm_80 and sm_90 without a GPU) both go through them, and
:func:`signature_of` gives the signature and attributes Triton's own launcher derives from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from interp.errors import BadInputError, MissingDependencyError
from interp.kernels.problem import AttentionStats
from interp.kernels.targets import RULES, masked_tokens

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is missing
    triton = None

# Rules computed from their single target key before the key loop, the others per key block.
SINGLE_KEY_RULES = ("prev", "self", "bos")
# Constexpr name of each rule's output slot (-1: rule not computed).
SLOT_NAMES = {"prev": "S_PREV", "dup": "S_DUP", "ngram1": "S_NG1", "ngram2": "S_NG2", "ngram3": "S_NG3",
              "ngram4": "S_NG4", "span": "S_SPAN", "bos": "S_BOS", "self": "S_SELF"}
# Runtime integer arguments: never specialised on their value (1, multiple of 16), so one
# compiled kernel serves every size and the ahead-of-time list is exactly what launches.
RUNTIME_INTS = ("B", "H", "HKV", "PQ", "PK", "R", "window")
COUNT_RUNTIME_INTS = ("B", "PQ", "PK", "R", "window")


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@dataclass(frozen=True)
class BlockConfig:
    """Tile sizes and launch options of one program.

    ``block_m``: (query row, query head) pairs per program (``block_m // group`` rows);
    ``block_n``: keys per step of the key loop.
    """

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    # ptxas's register limit per thread. Without one (None) ptxas picks a limit itself, aiming at
    # occupancy (seen: 128 for 64 and 256 threads, 168 for 128 threads), and spills where a
    # specialisation needs a little more, unpredictably (a lighter rule set may spill where a
    # heavier one does not). 255, the default, lets it take what each needs: no specialisation
    # spills (benchmarks/results/triton_aot.md), at a few more registers for some.
    maxnreg: int | None = 255

    @property
    def name(self) -> str:
        return f"M{self.block_m}-N{self.block_n}-w{self.num_warps}-s{self.num_stages}"

    @property
    def options(self) -> dict[str, int]:
        """Launch options: warps, pipeline stages, and the register limit where one is set."""
        out = {"num_warps": self.num_warps, "num_stages": self.num_stages}
        if self.maxnreg is not None:
            out["maxnreg"] = self.maxnreg
        return out


# The configurations the CUDA path chooses from, per padded head size and input width: "16"
# for bfloat16/float16, "32" for float32 (whose three TF32 products need about twice the
# registers). ``AUTOTUNE`` entries are timed against each other on first use of a shape class
# (the first is the default, used under the interpreter); ``FEW_ROWS`` serves launches with few
# (row, head) pairs (decoding steps, row subsets), where a large row block would idle. Chosen so
# that no specialisation spills registers on sm_80 or sm_90 (benchmarks/results/triton_aot.md).
AUTOTUNE: dict[tuple[int, str], tuple[BlockConfig, ...]] = {
    (64, "16"): (BlockConfig(64, 32, 4, 1), BlockConfig(128, 32, 8, 2), BlockConfig(64, 16, 4, 1)),
    (64, "32"): (BlockConfig(32, 16, 2, 1),),
    (128, "16"): (BlockConfig(64, 32, 4, 2), BlockConfig(64, 64, 8, 2), BlockConfig(128, 32, 8, 2)),
    (256, "16"): (BlockConfig(64, 32, 8, 2), BlockConfig(32, 32, 4, 2)),
}
FEW_ROWS: dict[tuple[int, str], BlockConfig] = {
    (64, "16"): BlockConfig(16, 32, 2, 2),
    (64, "32"): BlockConfig(32, 16, 2, 1),
    (128, "16"): BlockConfig(16, 32, 2, 2),
    (256, "16"): BlockConfig(32, 32, 4, 2),
}
FEW_ROWS_LIMIT = 32  # (row, head) pairs per kv head up to which ``FEW_ROWS`` is used


def padded_head_size(head_dim: int) -> int:
    """The head size the kernel's tiles use: a power of two, at least 16 (the smallest dot)."""
    return max(16, _next_pow2(head_dim))


def _table_key(head_dim: int, dtype: torch.dtype) -> tuple[int, str]:
    return max(padded_head_size(head_dim), 64), "32" if dtype == torch.float32 else "16"


def configs_for(head_dim: int, dtype: torch.dtype = torch.bfloat16, rows: int | None = None,
                group: int = 1) -> tuple[BlockConfig, ...]:
    """The block configurations a launch may use: ``FEW_ROWS`` when ``rows x group`` is at most
    ``FEW_ROWS_LIMIT``, else the autotune table's (``rows`` None: the table's)."""
    key = _table_key(head_dim, dtype)
    if rows is not None and rows * group <= FEW_ROWS_LIMIT:
        return (FEW_ROWS[key],)
    return AUTOTUNE[key]


def triton_supports(dtype: torch.dtype, head_dim: int) -> bool:
    """Whether the kernel takes q/k of ``dtype`` and head size ``head_dim``.

    16-bit inputs: any head size up to 256. float32: up to 64, where three TF32 tensor-core
    products (float32 accuracy) fit the registers; beyond, the split q tile alone would need 2 x
    head size registers per thread and ptxas spills, so ``backend="auto"`` takes the PyTorch path
    (SDPA's fused CUDA kernel for the log-sum-exp) for them."""
    dp = padded_head_size(head_dim)
    if dtype in (torch.bfloat16, torch.float16):
        return dp <= 256
    return dtype == torch.float32 and dp <= 64


def _check_supported(dtype: torch.dtype, head_dim: int) -> None:
    if not triton_supports(dtype, head_dim):
        raise BadInputError(
            f"the Triton kernel takes bfloat16/float16 q and k with head sizes up to 256 and float32 up to 64, not "
            f"{str(dtype).removeprefix('torch.')} with head size {head_dim}; use backend='torch' (or 'auto')")


def kernel_constexprs(
    *,
    dtype: torch.dtype,
    head_dim: int,
    group: int,
    rules: Sequence[str],
    row_stats: bool,
    topk: int,
    exclude: Sequence[str],
    causal: bool,
    sliding_window: bool,
    softcap: bool,
    key_padding: bool,
    config: BlockConfig,
    interpreted: bool = False,
) -> tuple[dict[str, Any], dict[str, int]]:
    """The kernel's compile-time constants and launch options for one launch.

    The single source of every specialisation: the CUDA launch and the ahead-of-time compile
    script both call it. Returns ``(constexprs, options)``; ``options`` holds ``num_warps`` and
    ``num_stages`` and ``maxnreg``. ``interpreted``: for Triton's CPU interpreter, whose dot product reads
    bfloat16 tiles as raw integers, bfloat16 products run in float32 (never compiled for a GPU).
    """
    _check_supported(dtype, head_dim)
    block_m = max(config.block_m, _next_pow2(group))  # at least one row of every head
    used = [r for r in RULES if r in rules]
    slots = {SLOT_NAMES[r]: (used.index(r) if r in used else -1) for r in RULES}
    topk = topk if row_stats else 0
    constexprs: dict[str, Any] = dict(
        D=head_dim, DP=padded_head_size(head_dim), G=group, BLOCK_M=block_m, BLOCK_N=config.block_n,
        # float32 inputs: three TF32 tensor-core products (float32 accuracy); 16-bit inputs:
        # the native tensor-core product, accumulated in float32.
        PRECISION="tf32x3" if dtype == torch.float32 else "tf32",
        # A float32 q tile split for three TF32 products needs 2 x head size registers per thread
        # if pinned for the whole key loop: the product runs over 32-wide slices of the head,
        # each slice of q reloaded (from L1) at every key block.
        DC=min(padded_head_size(head_dim), 32) if dtype == torch.float32 else padded_head_size(head_dim),
        DOT_F32=interpreted and dtype == torch.bfloat16,
        TOPK=topk, KP=max(2, _next_pow2(max(topk, 1))), ROW_STATS=bool(row_stats),
        HAS_SOFTCAP=bool(softcap), HAS_WINDOW=bool(sliding_window), HAS_KMASK=bool(key_padding),
        CAUSAL=bool(causal), EXCL_BOS="bos" in exclude, EXCL_SELF="self" in exclude, **slots,
    )
    return constexprs, config.options


# The count kernel has no dot product: one configuration serves every case.
COUNT_CONFIG = BlockConfig(64, 32, 4, 1)


def count_constexprs(
    *, rules: Sequence[str], exclude: Sequence[str], causal: bool, sliding_window: bool, key_padding: bool,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Compile-time constants and launch options of the target-count kernel (one per rule set and masks)."""
    used = [r for r in RULES if r in rules]
    slots = {SLOT_NAMES[r]: (used.index(r) if r in used else -1) for r in RULES}
    constexprs: dict[str, Any] = dict(
        BLOCK_M=COUNT_CONFIG.block_m, BLOCK_N=COUNT_CONFIG.block_n, HAS_WINDOW=bool(sliding_window),
        HAS_KMASK=bool(key_padding), CAUSAL=bool(causal), EXCL_BOS="bos" in exclude, EXCL_SELF="self" in exclude,
        **slots,
    )
    return constexprs, COUNT_CONFIG.options


if triton is not None:

    @triton.jit
    def _tanh(x):
        return 2.0 * tl.sigmoid(2.0 * x) - 1.0

    @triton.jit
    def _logits(dots, scale2, scaling, softcap, HAS_SOFTCAP: tl.constexpr):
        """Raw q·k products to base-2 scores: scaled, soft-capped, times log2(e)."""
        if HAS_SOFTCAP:
            return _tanh(dots * (scaling / softcap)) * (softcap * 1.4426950408889634)
        else:
            return dots * scale2

    @triton.jit
    def _visible(kk, qa, valid_row, in_k, kmask_ptr, b, PK, keys, window,
                 CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_KMASK: tl.constexpr):
        """[rows, keys] visibility: causal, window and padding masks."""
        vis = valid_row[:, None] & in_k[None, :]
        if CAUSAL:
            vis = vis & (kk <= qa)
        if HAS_WINDOW:
            vis = vis & (qa - kk < window)
        if HAS_KMASK:
            km = tl.load(kmask_ptr + b * PK + keys, mask=in_k, other=0)
            vis = vis & (km[None, :] != 0)
        return vis

    @triton.jit
    def _block_rules(tok_ptr, b, PK, keys, in_k, kk, qa, vis, first, t0, t1, t2, t3, span_lo, span_hi, w, alpha,
                     a_span, a_dup, a_ng1, a_ng2, a_ng3, a_ng4,
                     EXCL_BOS: tl.constexpr, EXCL_SELF: tl.constexpr, S_DUP: tl.constexpr, S_NG1: tl.constexpr,
                     S_NG2: tl.constexpr, S_NG3: tl.constexpr, S_NG4: tl.constexpr, S_SPAN: tl.constexpr):
        """Add one key block's visible targets of the rules over many keys to their accumulators.

        Each accumulator becomes ``acc * alpha + Σ_targets w`` (``w``: the probabilities and the
        rescale of the online softmax, or 1 and 1 to count). Each target mask is consumed as soon
        as it is built, so at most two are alive at once."""
        cand = vis  # keys that may be targets of the rules other than bos and self
        if EXCL_BOS:
            cand = cand & (kk != first)
        if EXCL_SELF:
            cand = cand & (kk != qa)
        if S_SPAN >= 0:
            t = cand & (kk >= span_lo[:, None]) & (kk < span_hi[:, None])
            a_span = a_span * alpha + tl.sum(tl.where(t, w, 0), axis=1)
        if S_DUP >= 0:
            kt = tl.load(tok_ptr + b * PK + keys, mask=in_k, other=-5)
            t = cand & (kk < qa) & (kt[None, :] == t0[:, None])
            a_dup = a_dup * alpha + tl.sum(tl.where(t, w, 0), axis=1)
        if (S_NG1 >= 0) or (S_NG2 >= 0) or (S_NG3 >= 0) or (S_NG4 >= 0):
            k1 = tl.load(tok_ptr + b * PK + keys - 1, mask=in_k & (keys >= 1), other=-6)
            t = cand & (kk - 1 < qa) & (k1[None, :] == t0[:, None])
            if S_NG1 >= 0:
                a_ng1 = a_ng1 * alpha + tl.sum(tl.where(t, w, 0), axis=1)
            if (S_NG2 >= 0) or (S_NG3 >= 0) or (S_NG4 >= 0):
                k2 = tl.load(tok_ptr + b * PK + keys - 2, mask=in_k & (keys >= 2), other=-7)
                t = t & (k2[None, :] == t1[:, None])
                if S_NG2 >= 0:
                    a_ng2 = a_ng2 * alpha + tl.sum(tl.where(t, w, 0), axis=1)
                if (S_NG3 >= 0) or (S_NG4 >= 0):
                    k3 = tl.load(tok_ptr + b * PK + keys - 3, mask=in_k & (keys >= 3), other=-8)
                    t = t & (k3[None, :] == t2[:, None])
                    if S_NG3 >= 0:
                        a_ng3 = a_ng3 * alpha + tl.sum(tl.where(t, w, 0), axis=1)
                    if S_NG4 >= 0:
                        k4 = tl.load(tok_ptr + b * PK + keys - 4, mask=in_k & (keys >= 4), other=-9)
                        t = t & (k4[None, :] == t3[:, None])
                        a_ng4 = a_ng4 * alpha + tl.sum(tl.where(t, w, 0), axis=1)
        return a_span, a_dup, a_ng1, a_ng2, a_ng3, a_ng4

    @triton.jit
    def _single_targets(q_abs, valid_row, first, kmask_ptr, b, PK, window,
                        CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_KMASK: tl.constexpr, EXCL_BOS: tl.constexpr):
        """Whether each row's previous key, own key and first real key are visible targets."""
        ok_prev = valid_row & (q_abs >= 1)
        ok_self = valid_row
        bos = tl.zeros_like(q_abs) + first
        ok_bos = valid_row
        if CAUSAL:
            ok_bos = ok_bos & (bos <= q_abs)
        if HAS_WINDOW:
            ok_prev = ok_prev & (tl.zeros_like(q_abs) + 1 < window)
            ok_self = ok_self & (tl.zeros_like(q_abs) < window)
            ok_bos = ok_bos & (q_abs - bos < window)
        if HAS_KMASK:
            ok_prev = ok_prev & (tl.load(kmask_ptr + b * PK + q_abs - 1, mask=ok_prev, other=0) != 0)
            ok_self = ok_self & (tl.load(kmask_ptr + b * PK + q_abs, mask=ok_self, other=0) != 0)
            ok_bos = ok_bos & (tl.load(kmask_ptr + b * PK + bos, mask=ok_bos, other=0) != 0)
        if EXCL_BOS:
            ok_prev = ok_prev & (q_abs - 1 != bos)
        return ok_prev, ok_self, ok_bos, bos

    @triton.jit
    def _single_key(q32, k_ptr, k_base, key, ok, offs_d, lse2, scale2, scaling, softcap,
                    D: tl.constexpr, DP: tl.constexpr, HAS_SOFTCAP: tl.constexpr):
        """Probability of one key per row (0 where ``ok`` is False), from its own dot product."""
        if D == DP:
            kmask = ok[:, None]
        else:
            kmask = ok[:, None] & (offs_d[None, :] < D)
        kt = tl.load(k_ptr + k_base + key[:, None] * D + offs_d[None, :], mask=kmask, other=0.0).to(tl.float32)
        s = _logits(tl.sum(q32 * kt, axis=1), scale2, scaling, softcap, HAS_SOFTCAP)
        return tl.where(ok, tl.exp2(s - lse2), 0.0)

    @triton.jit(do_not_specialize=list(RUNTIME_INTS))
    def _stats_kernel(
        q_ptr, k_ptr, tok_ptr, rows_ptr, span_ptr, first_ptr, kmask_ptr,
        lse_ptr, maxp_ptr, argmax_ptr, ent_ptr, topv_ptr, topi_ptr, mass_ptr,
        B, H, HKV, PQ, PK, R, window, scaling, softcap,
        D: tl.constexpr, DP: tl.constexpr, G: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        PRECISION: tl.constexpr, DC: tl.constexpr, DOT_F32: tl.constexpr, TOPK: tl.constexpr, KP: tl.constexpr, ROW_STATS: tl.constexpr,
        HAS_SOFTCAP: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_KMASK: tl.constexpr, CAUSAL: tl.constexpr,
        EXCL_BOS: tl.constexpr, EXCL_SELF: tl.constexpr,
        S_PREV: tl.constexpr, S_DUP: tl.constexpr, S_NG1: tl.constexpr, S_NG2: tl.constexpr,
        S_NG3: tl.constexpr, S_NG4: tl.constexpr, S_SPAN: tl.constexpr, S_BOS: tl.constexpr,
        S_SELF: tl.constexpr,
    ):
        """Row log-sum-exp, rule masses and row statistics of ``BLOCK_M`` (row, head) pairs."""
        RPB: tl.constexpr = BLOCK_M // G  # rows per program
        BLOCK_RULES: tl.constexpr = (S_DUP >= 0) or (S_NG1 >= 0) or (S_NG2 >= 0) or (S_NG3 >= 0) or (S_NG4 >= 0) \
            or (S_SPAN >= 0)
        # Under a causal mask later rows see more keys: the heaviest row blocks start first.
        pid_r = tl.num_programs(0) - 1 - tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // HKV
        kvh = pid_bh % HKV
        scale2 = scaling * 1.4426950408889634

        offs_m = tl.arange(0, BLOCK_M)
        g = offs_m % G
        r = pid_r * RPB + offs_m // G
        valid_m = (offs_m < RPB * G) & (r < R)
        head = kvh * G + g
        row = tl.load(rows_ptr + b * R + r, mask=valid_m, other=0)
        q_abs = row + (PK - PQ)
        offs_d = tl.arange(0, DP)
        if D == DP:
            qmask = valid_m[:, None]
        else:
            qmask = valid_m[:, None] & (offs_d[None, :] < D)
        q_ptrs = q_ptr + (((b * H + head).to(tl.int64) * PQ + row) * D)[:, None] + offs_d[None, :]
        k_base = (b * HKV + kvh).to(tl.int64) * PK * D
        first = tl.load(first_ptr + b)
        if DC == DP:
            q = tl.load(q_ptrs, mask=qmask, other=0.0)
        else:
            q_step = tl.minimum(first, 0)  # 0, but opaque to the compiler: keeps the q loads in the loop
            offs_c = tl.arange(0, DC)

        # Row tokens ending at the query, for duplicate and n-gram rules (-1 before the start).
        t0 = tl.load(tok_ptr + b * PK + q_abs, mask=valid_m, other=-1)
        t1 = tl.load(tok_ptr + b * PK + q_abs - 1, mask=valid_m & (q_abs >= 1), other=-2)
        t2 = tl.load(tok_ptr + b * PK + q_abs - 2, mask=valid_m & (q_abs >= 2), other=-3)
        t3 = tl.load(tok_ptr + b * PK + q_abs - 3, mask=valid_m & (q_abs >= 3), other=-4)
        span_lo = tl.load(span_ptr + (b * R + r) * 2, mask=valid_m, other=0)
        span_hi = tl.load(span_ptr + (b * R + r) * 2 + 1, mask=valid_m, other=0)

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        e_i = tl.zeros([BLOCK_M], tl.float32)
        best = tl.full([BLOCK_M], float("-inf"), tl.float32)
        best_i = tl.zeros([BLOCK_M], tl.int32)
        a_dup = tl.zeros([BLOCK_M], tl.float32)
        a_ng1 = tl.zeros([BLOCK_M], tl.float32)
        a_ng2 = tl.zeros([BLOCK_M], tl.float32)
        a_ng3 = tl.zeros([BLOCK_M], tl.float32)
        a_ng4 = tl.zeros([BLOCK_M], tl.float32)
        a_span = tl.zeros([BLOCK_M], tl.float32)
        offs_kp = tl.arange(0, KP)
        offs_n = tl.arange(0, BLOCK_N)
        top_v = tl.full([BLOCK_M, KP], float("-inf"), tl.float32)
        top_i = tl.zeros([BLOCK_M, KP], tl.int32)

        # Only key blocks some row of this block can see.
        if CAUSAL:
            hi = tl.minimum(tl.max(tl.where(valid_m, q_abs, 0), axis=0) + 1, PK)
        else:
            hi = PK
        lo = 0
        if HAS_WINDOW:
            lo = tl.maximum(tl.min(tl.where(valid_m, q_abs, PK), axis=0) - window + 1, 0)
            lo = (lo // BLOCK_N) * BLOCK_N
        for n0 in range(lo, hi, BLOCK_N):
            keys = n0 + offs_n
            in_k = keys < PK
            if DC == DP:
                if D == DP:
                    kmask = in_k[:, None]
                else:
                    kmask = in_k[:, None] & (offs_d[None, :] < D)
                k = tl.load(k_ptr + k_base + keys[:, None] * D + offs_d[None, :], mask=kmask, other=0.0)
                if DOT_F32:
                    dots = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
                else:
                    dots = tl.dot(q, tl.trans(k), input_precision=PRECISION)
            else:
                dots = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
                for c in tl.static_range(DP // DC):
                    cols = c * DC + offs_c
                    qc = tl.load(q_ptr + (((b * H + head).to(tl.int64) * PQ + row) * D + n0 * q_step)[:, None]
                                 + cols[None, :], mask=valid_m[:, None] & (cols[None, :] < D), other=0.0)
                    kc = tl.load(k_ptr + k_base + keys[:, None] * D + cols[None, :],
                                 mask=in_k[:, None] & (cols[None, :] < D), other=0.0)
                    dots = tl.dot(qc, tl.trans(kc), dots, input_precision=PRECISION)
            s = _logits(dots, scale2, scaling, softcap, HAS_SOFTCAP)
            kk = keys[None, :]
            qa = q_abs[:, None]
            vis = _visible(kk, qa, valid_m, in_k, kmask_ptr, b, PK, keys, window, CAUSAL, HAS_WINDOW, HAS_KMASK)
            s = tl.where(vis, s, float("-inf"))

            if ROW_STATS and TOPK == 0:
                bmax, bidx = tl.max(s, axis=1, return_indices=True)
                better = bmax > best
                best_i = tl.where(better, bidx + n0, best_i)
                best = tl.where(better, bmax, best)
            else:
                bmax = tl.max(s, axis=1)
            m_new = tl.maximum(m_i, bmax)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(s - m_safe[:, None])  # exactly 0 where hidden: s is -inf there
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if ROW_STATS:
                e_i = e_i * alpha + tl.sum(tl.where(vis, p * s, 0.0), axis=1)
                if TOPK > 0:
                    # The k-th best so far; a block with no larger score leaves the list as it is.
                    kth = tl.min(tl.where(offs_kp[None, :] < TOPK, top_v, float("inf")), axis=1)
                    if tl.max((bmax > kth).to(tl.int32), axis=0) > 0:
                        # Merge the sorted list with this block: take the larger head of either, TOPK times.
                        cand = s
                        old_v = top_v
                        new_v = tl.full([BLOCK_M, KP], float("-inf"), tl.float32)
                        new_i = tl.zeros([BLOCK_M, KP], tl.int32)
                        for t in tl.static_range(TOPK):
                            cv, ci = tl.max(cand, axis=1, return_indices=True)
                            ov, oi = tl.max(old_v, axis=1, return_indices=True)
                            take_old = ov >= cv
                            at_old = offs_kp[None, :] == oi[:, None]
                            old_idx = tl.sum(tl.where(at_old, top_i, 0), axis=1)
                            pick_v = tl.where(take_old, ov, cv)
                            pick_i = tl.where(take_old, old_idx, ci + n0)
                            new_v = tl.where(offs_kp[None, :] == t, pick_v[:, None], new_v)
                            new_i = tl.where(offs_kp[None, :] == t, pick_i[:, None], new_i)
                            old_v = tl.where(take_old[:, None] & at_old, float("-inf"), old_v)
                            cand = tl.where((~take_old)[:, None] & (offs_n[None, :] == ci[:, None]), float("-inf"), cand)
                        top_v = new_v
                        top_i = new_i
            m_i = m_new

            # Rule masses over many keys: targets evaluated on the fly from positions and tokens.
            if BLOCK_RULES:
                a_span, a_dup, a_ng1, a_ng2, a_ng3, a_ng4 = _block_rules(
                    tok_ptr, b, PK, keys, in_k, kk, qa, vis, first, t0, t1, t2, t3, span_lo, span_hi, p, alpha,
                    a_span, a_dup, a_ng1, a_ng2, a_ng3, a_ng4,
                    EXCL_BOS, EXCL_SELF, S_DUP, S_NG1, S_NG2, S_NG3, S_NG4, S_SPAN)

        lse2 = m_i + tl.log2(l_i)
        some = l_i > 0  # rows that see no key at all get masses of 0
        inv_l = tl.where(some, 1.0 / l_i, 0.0)
        out = (b * H + head) * R + r
        tl.store(lse_ptr + out, lse2 * 0.6931471805599453, mask=valid_m)
        if ROW_STATS:
            if TOPK > 0:
                best = tl.max(top_v, axis=1)
                best_i = tl.sum(tl.where(offs_kp[None, :] == 0, top_i, 0), axis=1)
            tl.store(maxp_ptr + out, tl.exp2(best - lse2), mask=valid_m)
            tl.store(argmax_ptr + out, best_i.to(tl.int64), mask=valid_m)
            tl.store(ent_ptr + out, (lse2 - e_i * inv_l) * 0.6931471805599453, mask=valid_m)
            if TOPK > 0:
                tmask = valid_m[:, None] & (offs_kp[None, :] < TOPK)
                tl.store(topv_ptr + out[:, None] * TOPK + offs_kp[None, :], tl.exp2(top_v - lse2[:, None]), mask=tmask)
                tl.store(topi_ptr + out[:, None] * TOPK + offs_kp[None, :], top_i.to(tl.int64), mask=tmask)
        stride = B * H * R
        if (S_PREV >= 0) or (S_SELF >= 0) or (S_BOS >= 0):
            q32 = tl.load(q_ptrs, mask=qmask, other=0.0).to(tl.float32)
            ok_prev, ok_self, ok_bos, bos = _single_targets(q_abs, valid_m & some, first, kmask_ptr, b, PK, window,
                                                            CAUSAL, HAS_WINDOW, HAS_KMASK, EXCL_BOS)
            if S_PREV >= 0:
                mass = _single_key(q32, k_ptr, k_base, q_abs - 1, ok_prev, offs_d, lse2, scale2, scaling, softcap,
                                   D, DP, HAS_SOFTCAP)
                tl.store(mass_ptr + S_PREV * stride + out, mass, mask=valid_m)
            if S_SELF >= 0:
                mass = _single_key(q32, k_ptr, k_base, q_abs, ok_self, offs_d, lse2, scale2, scaling, softcap,
                                   D, DP, HAS_SOFTCAP)
                tl.store(mass_ptr + S_SELF * stride + out, mass, mask=valid_m)
            if S_BOS >= 0:
                mass = _single_key(q32, k_ptr, k_base, bos, ok_bos, offs_d, lse2, scale2, scaling, softcap,
                                   D, DP, HAS_SOFTCAP)
                tl.store(mass_ptr + S_BOS * stride + out, mass, mask=valid_m)
        if S_DUP >= 0:
            tl.store(mass_ptr + S_DUP * stride + out, a_dup * inv_l, mask=valid_m)
        if S_NG1 >= 0:
            tl.store(mass_ptr + S_NG1 * stride + out, a_ng1 * inv_l, mask=valid_m)
        if S_NG2 >= 0:
            tl.store(mass_ptr + S_NG2 * stride + out, a_ng2 * inv_l, mask=valid_m)
        if S_NG3 >= 0:
            tl.store(mass_ptr + S_NG3 * stride + out, a_ng3 * inv_l, mask=valid_m)
        if S_NG4 >= 0:
            tl.store(mass_ptr + S_NG4 * stride + out, a_ng4 * inv_l, mask=valid_m)
        if S_SPAN >= 0:
            tl.store(mass_ptr + S_SPAN * stride + out, a_span * inv_l, mask=valid_m)

    @triton.jit(do_not_specialize=list(COUNT_RUNTIME_INTS))
    def _count_kernel(
        tok_ptr, rows_ptr, span_ptr, first_ptr, kmask_ptr, count_ptr,
        B, PQ, PK, R, window,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        HAS_WINDOW: tl.constexpr, HAS_KMASK: tl.constexpr, CAUSAL: tl.constexpr,
        EXCL_BOS: tl.constexpr, EXCL_SELF: tl.constexpr,
        S_PREV: tl.constexpr, S_DUP: tl.constexpr, S_NG1: tl.constexpr, S_NG2: tl.constexpr,
        S_NG3: tl.constexpr, S_NG4: tl.constexpr, S_SPAN: tl.constexpr, S_BOS: tl.constexpr,
        S_SELF: tl.constexpr,
    ):
        """Visible targets per rule and row. They depend on tokens and masks only, not on q or k: one
        pass per row (not per head or layer), kept out of the statistics kernel's registers."""
        BLOCK_RULES: tl.constexpr = (S_DUP >= 0) or (S_NG1 >= 0) or (S_NG2 >= 0) or (S_NG3 >= 0) or (S_NG4 >= 0) \
            or (S_SPAN >= 0)
        pid_r = tl.num_programs(0) - 1 - tl.program_id(0)
        b = tl.program_id(1)
        r = pid_r * BLOCK_M + tl.arange(0, BLOCK_M)
        valid_m = r < R
        row = tl.load(rows_ptr + b * R + r, mask=valid_m, other=0)
        q_abs = row + (PK - PQ)
        first = tl.load(first_ptr + b)
        stride = B * R
        out = b * R + r
        ok_prev, ok_self, ok_bos, bos = _single_targets(q_abs, valid_m, first, kmask_ptr, b, PK, window,
                                                        CAUSAL, HAS_WINDOW, HAS_KMASK, EXCL_BOS)
        if S_PREV >= 0:
            tl.store(count_ptr + S_PREV * stride + out, ok_prev.to(tl.int32), mask=valid_m)
        if S_SELF >= 0:
            tl.store(count_ptr + S_SELF * stride + out, ok_self.to(tl.int32), mask=valid_m)
        if S_BOS >= 0:
            tl.store(count_ptr + S_BOS * stride + out, ok_bos.to(tl.int32), mask=valid_m)
        if BLOCK_RULES:
            t0 = tl.load(tok_ptr + b * PK + q_abs, mask=valid_m, other=-1)
            t1 = tl.load(tok_ptr + b * PK + q_abs - 1, mask=valid_m & (q_abs >= 1), other=-2)
            t2 = tl.load(tok_ptr + b * PK + q_abs - 2, mask=valid_m & (q_abs >= 2), other=-3)
            t3 = tl.load(tok_ptr + b * PK + q_abs - 3, mask=valid_m & (q_abs >= 3), other=-4)
            span_lo = tl.load(span_ptr + (b * R + r) * 2, mask=valid_m, other=0)
            span_hi = tl.load(span_ptr + (b * R + r) * 2 + 1, mask=valid_m, other=0)
            c_dup = tl.zeros([BLOCK_M], tl.int32)
            c_ng1 = tl.zeros([BLOCK_M], tl.int32)
            c_ng2 = tl.zeros([BLOCK_M], tl.int32)
            c_ng3 = tl.zeros([BLOCK_M], tl.int32)
            c_ng4 = tl.zeros([BLOCK_M], tl.int32)
            c_span = tl.zeros([BLOCK_M], tl.int32)
            if CAUSAL:
                hi = tl.minimum(tl.max(tl.where(valid_m, q_abs, 0), axis=0) + 1, PK)
            else:
                hi = PK
            lo = 0
            if HAS_WINDOW:
                lo = tl.maximum(tl.min(tl.where(valid_m, q_abs, PK), axis=0) - window + 1, 0)
            offs_n = tl.arange(0, BLOCK_N)
            for n0 in range(lo, hi, BLOCK_N):
                keys = n0 + offs_n
                in_k = keys < PK
                kk = keys[None, :]
                qa = q_abs[:, None]
                vis = _visible(kk, qa, valid_m, in_k, kmask_ptr, b, PK, keys, window, CAUSAL, HAS_WINDOW, HAS_KMASK)
                c_span, c_dup, c_ng1, c_ng2, c_ng3, c_ng4 = _block_rules(
                    tok_ptr, b, PK, keys, in_k, kk, qa, vis, first, t0, t1, t2, t3, span_lo, span_hi, 1, 1,
                    c_span, c_dup, c_ng1, c_ng2, c_ng3, c_ng4,
                    EXCL_BOS, EXCL_SELF, S_DUP, S_NG1, S_NG2, S_NG3, S_NG4, S_SPAN)
            if S_DUP >= 0:
                tl.store(count_ptr + S_DUP * stride + out, c_dup, mask=valid_m)
            if S_NG1 >= 0:
                tl.store(count_ptr + S_NG1 * stride + out, c_ng1, mask=valid_m)
            if S_NG2 >= 0:
                tl.store(count_ptr + S_NG2 * stride + out, c_ng2, mask=valid_m)
            if S_NG3 >= 0:
                tl.store(count_ptr + S_NG3 * stride + out, c_ng3, mask=valid_m)
            if S_NG4 >= 0:
                tl.store(count_ptr + S_NG4 * stride + out, c_ng4, mask=valid_m)
            if S_SPAN >= 0:
                tl.store(count_ptr + S_SPAN * stride + out, c_span, mask=valid_m)


@dataclass
class Launch:
    """Everything one kernel launch needs: which kernel, grid, positional arguments, constexprs, options."""

    kernel: str  # "stats" or "count"
    grid: tuple[int, int]
    args: tuple
    constexprs: dict[str, Any]
    options: dict[str, int]
    config: BlockConfig
    outputs: dict[str, torch.Tensor]
    rules: list[str]

    @property
    def kwargs(self) -> dict[str, Any]:
        return {**self.constexprs, **self.options}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def prepare_launches(problem, rules, tokens, spans, row_stats, topk, exclude=(),
                     config: BlockConfig | None = None) -> tuple[Launch, Launch]:
    """The statistics launch and the target-count launch for a validated ``Problem``.

    Used by the CUDA path and, with small CPU tensors of the right dtypes, by the ahead-of-time
    compile script, so that what is compiled ahead of time is what launches.
    """
    p = problem
    q, k = p.q, p.k
    b, h, pq, d = q.shape
    hkv, pk = k.shape[1], k.shape[2]
    r = p.rows.shape[1]
    dev = q.device
    q, k = _aligned(q.contiguous()), _aligned(k.contiguous())
    if k.dtype != q.dtype:
        k = k.to(q.dtype)
    _check_supported(q.dtype, d)
    config = config or configs_for(d, q.dtype, r, p.group)[0]
    masks = dict(causal=p.causal, sliding_window=p.sliding_window is not None, key_padding=p.key_mask is not None)
    constexprs, options = kernel_constexprs(
        dtype=q.dtype, head_dim=d, group=p.group, rules=rules, row_stats=row_stats, topk=topk, exclude=exclude,
        softcap=p.softcap is not None, config=config, interpreted=_interpreted(), **masks,
    )
    used = [name for name in RULES if name in rules]
    toks = tokens if tokens is not None else torch.zeros(b, pk, dtype=torch.long, device=dev)
    toks = masked_tokens(toks.to(dev).long(), p.key_mask).to(torch.int32).contiguous()
    rows = p.rows.to(torch.int32).contiguous()
    span_t = (spans if spans is not None else torch.zeros(b, r, 2, dtype=torch.long)).to(dev).to(torch.int32).contiguous()
    first = (
        p.key_mask.long().argmax(dim=1) if p.key_mask is not None else torch.zeros(b, dtype=torch.long, device=dev)
    ).to(torch.int32).contiguous()
    kmask = (p.key_mask if p.key_mask is not None else torch.ones(b, pk, dtype=torch.bool, device=dev)).to(torch.int8)
    window = int(p.sliding_window or 0)

    f32 = dict(dtype=torch.float32, device=dev)
    kk = max(constexprs["TOPK"], 1)
    outputs = {
        "lse": torch.empty(b, h, r, **f32),
        "max_prob": torch.empty(b, h, r, **f32),
        "argmax": torch.empty(b, h, r, dtype=torch.long, device=dev),
        "entropy": torch.empty(b, h, r, **f32),
        "topk_prob": torch.empty(b, h, r, kk, **f32),
        "topk_index": torch.empty(b, h, r, kk, dtype=torch.long, device=dev),
        "mass": torch.empty(max(len(used), 1), b, h, r, **f32),
    }
    stats = Launch(
        "stats", (_cdiv(r, constexprs["BLOCK_M"] // p.group), b * hkv),
        (q, k, toks, rows, span_t, first, kmask,
         outputs["lse"], outputs["max_prob"], outputs["argmax"], outputs["entropy"], outputs["topk_prob"],
         outputs["topk_index"], outputs["mass"],
         b, h, hkv, pq, pk, r, window, float(p.scaling), float(p.softcap or 1.0)),
        constexprs, options, config, outputs, used,
    )
    c_constexprs, c_options = count_constexprs(rules=rules, exclude=exclude, **masks)
    counts = torch.empty(max(len(used), 1), b, r, dtype=torch.int32, device=dev)
    count = Launch(
        "count", (_cdiv(r, COUNT_CONFIG.block_m), b),
        (toks, rows, span_t, first, kmask, counts, b, pq, pk, r, window),
        c_constexprs, c_options, COUNT_CONFIG, {"count": counts}, used,
    )
    return stats, count


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """A 16-byte-aligned tensor (what the compiled kernels assume; fresh allocations always are)."""
    return t if t.data_ptr() % 16 == 0 else t.clone()


def _kernel(name: str):
    return _stats_kernel if name == "stats" else _count_kernel


def signature_of(launch: Launch, target: Any) -> tuple[dict[str, str], dict[tuple, Any], dict[Any, Any], dict[str, Any]]:
    """``(signature, constexprs, attrs, options)`` Triton's launcher derives for ``launch`` on ``target``.

    Runs Triton's own argument specialisation (types, 16-byte alignment, constant arguments)
    against a compiler backend for ``target`` (a ``triton.backends.compiler.GPUTarget``); needs
    no GPU. Not available under ``TRITON_INTERPRET=1``, where the kernels are interpreted.
    """
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    fn = _kernel(launch.kernel)
    if not isinstance(fn, JITFunction):
        raise RuntimeError("the kernels are interpreted (TRITON_INTERPRET=1): nothing to compile")
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, launch.kwargs, bound, specialization, options)
    return signature, constexprs, attrs, options.__dict__


def compile_launch(launch: Launch, target: Any):
    """Compile ``launch``'s specialisation for ``target`` without a GPU; returns Triton's ``CompiledKernel``."""
    from triton.compiler.compiler import ASTSource

    signature, constexprs, attrs, options = signature_of(launch, target)
    src = ASTSource(fn=_kernel(launch.kernel), signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=target, options=options)


def _run(launch: Launch) -> None:
    _kernel(launch.kernel)[launch.grid](*launch.args, **launch.kwargs)


# -- autotuning on CUDA ---------------------------------------------------------------------------

_TUNED: dict[tuple, BlockConfig] = {}


def _bucket(n: int) -> int:
    return _next_pow2(max(n, 1))


def _tune_key(launch: Launch, problem) -> tuple:
    fixed = {k: v for k, v in launch.constexprs.items() if k not in ("BLOCK_M", "BLOCK_N")}
    q, k = problem.q, problem.k
    return (str(q.dtype), tuple(sorted(fixed.items())), q.shape[0] * k.shape[1], _bucket(problem.rows.shape[1]),
            _bucket(k.shape[2]), torch.cuda.get_device_name(q.device))


def _best_config(problem, rules, tokens, spans, row_stats, topk, exclude) -> BlockConfig:
    """The fastest configuration of the head size's table for this shape class, timed once and remembered.

    Shape class: dtype, constexprs, batch x kv heads, and rows and keys rounded up to powers of two."""
    configs = configs_for(problem.q.shape[3], problem.q.dtype, problem.rows.shape[1], problem.group)
    if len(configs) == 1:
        return configs[0]
    first, _ = prepare_launches(problem, rules, tokens, spans, row_stats, topk, exclude, configs[0])
    key = _tune_key(first, problem)
    if key not in _TUNED:
        times = []
        for config in configs:
            launch, _ = prepare_launches(problem, rules, tokens, spans, row_stats, topk, exclude, config)
            times.append(triton.testing.do_bench(lambda launch=launch: _run(launch), warmup=2, rep=10))
        _TUNED[key] = configs[min(range(len(configs)), key=times.__getitem__)]
    return _TUNED[key]


def _interpreted() -> bool:
    from triton.runtime.jit import JITFunction

    return not isinstance(_stats_kernel, JITFunction)


def triton_attention_stats(problem, rules, tokens, spans, row_stats, topk, exclude=(),
                           config: BlockConfig | None = None, plan: dict | None = None):
    """Run the kernels on a validated ``Problem``; returns ``AttentionStats``.

    ``config``: a ``BlockConfig`` (default: on CUDA the fastest of the head size's autotune table,
    timed on first use of each shape class; under the interpreter the table's first). ``plan``: a
    dict shared by calls with the same tokens, rows, padding and window (every layer of a
    forward pass): the target counts, which depend on nothing else, are computed once into it.
    """
    if triton is None:
        raise MissingDependencyError("triton", "the Triton attention kernels", "pip install 'interp[gpu]'")
    if config is None and problem.q.is_cuda and not _interpreted():
        config = _best_config(problem, rules, tokens, spans, row_stats, topk, exclude)
    stats, count = prepare_launches(problem, rules, tokens, spans, row_stats, topk, exclude, config)
    _run(stats)
    counts = None
    if stats.rules:
        key = ("triton-counts", tuple(stats.rules), tuple(sorted(exclude)), problem.causal)
        counts = plan.get(key) if plan is not None else None
        if counts is None:
            _run(count)
            counts = count.outputs["count"].long()
            if plan is not None:
                plan[key] = counts
    o = stats.outputs
    out = AttentionStats(rows=problem.rows, lse=o["lse"])
    if row_stats:
        out.max_prob, out.argmax, out.entropy = o["max_prob"], o["argmax"], o["entropy"]
        if topk:
            out.topk_prob, out.topk_index = o["topk_prob"], o["topk_index"]
    for i, name in enumerate(stats.rules):
        assert counts is not None
        out.mass[name], out.n_targets[name] = o["mass"][i], counts[i]
    return out


def specialisation_name(kernel: str, constexprs: dict[str, Any]) -> str:
    """A short readable name of a launch's constexprs (for tables)."""
    rules = [r for r in RULES if constexprs[SLOT_NAMES[r]] >= 0]
    flags = [name for name, key in (("causal", "CAUSAL"), ("window", "HAS_WINDOW"), ("softcap", "HAS_SOFTCAP"),
                                    ("padding", "HAS_KMASK"), ("excl-bos", "EXCL_BOS"), ("excl-self", "EXCL_SELF"))
             if constexprs.get(key)]
    if kernel == "count":
        stats = "target counts"
    else:
        stats = f"row stats, top-{constexprs['TOPK']}" if constexprs["ROW_STATS"] else "masses"
    return f"{stats} [{','.join(rules) or '-'}] {' '.join(flags)}".strip()


__all__ = [
    "AUTOTUNE", "COUNT_CONFIG", "FEW_ROWS", "BlockConfig", "Launch", "compile_launch", "configs_for", "count_constexprs",
    "kernel_constexprs", "prepare_launches", "signature_of", "specialisation_name", "triton_attention_stats",
]
