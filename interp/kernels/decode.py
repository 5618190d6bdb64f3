"""Top-k of ``unembedding · vector`` for many vectors, without the full [vectors × vocab] matrix.

Vectors are taken ``chunk`` at a time and the vocabulary in slices, so memory stays at
``chunk × vocab_block`` scores; a running top-k and log-sum-exp give exact probabilities of
the softmax over the whole vocabulary. Matrix products go to the BLAS (or cuBLAS) of the
tensors' device, which is what bounds this computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.errors import BadInputError


@dataclass
class TopTokens:
    """Per vector: top-k token ids, their logits, and their softmax probabilities.

    Attributes:
        index: token ids ``[n, k]``.
        logit: their logits.
        prob: their probabilities.
        lse: each vector's log-sum-exp over the vocabulary ``[n]``.
    """

    index: torch.Tensor  # [n, k]
    logit: torch.Tensor  # [n, k]
    prob: torch.Tensor  # [n, k]
    lse: torch.Tensor  # [n] log-sum-exp over the vocabulary


def decode_topk(
    vectors: torch.Tensor,
    unembed: torch.Tensor,
    k: int = 10,
    *,
    bias: torch.Tensor | None = None,
    chunk: int = 1024,
    vocab_block: int = 65536,
    progress=None,
) -> TopTokens:
    """Top-``k`` tokens of ``softmax(vectors @ unembedᵀ + bias)`` for each row of ``vectors``.

    ``vectors`` is ``[n, d]``, ``unembed`` ``[vocab, d]``. ``progress`` (an ``interp.logs.progress``
    bar, or anything with ``update(n)``) is advanced by the number of vectors done.

    Args:
        chunk: vectors per block.
        vocab_block: vocabulary rows per block.

    Returns:
        A ``TopTokens``.

    >>> import torch
    >>> W = torch.eye(5, 3)                                   # token i reads dimension i
    >>> decode_topk(torch.tensor([[0.0, 9.0, 0.0]]), W, k=1).index.tolist()
    [[1]]
    """
    n, d = vectors.shape
    if unembed.ndim != 2 or unembed.shape[1] != d:
        raise BadInputError(f"unembed must be [vocab, {d}] to match vectors [n, {d}]; got {tuple(unembed.shape)}")
    vocab = unembed.shape[0]
    if not 1 <= k <= vocab:
        raise BadInputError(f"k must be between 1 and the vocabulary size {vocab}, got {k}")
    index = torch.empty(n, k, dtype=torch.long, device=vectors.device)
    logit = torch.empty(n, k, dtype=torch.float32, device=vectors.device)
    lse = torch.empty(n, dtype=torch.float32, device=vectors.device)
    w = unembed.to(vectors.dtype)
    for start in range(0, n, chunk):
        v = vectors[start : start + chunk]
        best_v = torch.full((v.shape[0], k), float("-inf"), device=v.device)
        best_i = torch.zeros(v.shape[0], k, dtype=torch.long, device=v.device)
        run_lse = torch.full((v.shape[0],), float("-inf"), device=v.device)
        for vs in range(0, vocab, vocab_block):
            scores = (v @ w[vs : vs + vocab_block].T).float()
            if bias is not None:
                scores += bias[vs : vs + vocab_block].float()
            # log_softmax is fused and vectorised; torch.logsumexp takes a much slower path on CPUs.
            block_lse = scores[:, 0] - torch.log_softmax(scores, dim=-1)[:, 0]
            run_lse = torch.logaddexp(run_lse, block_lse)
            top = scores.topk(min(k, scores.shape[1]), dim=-1)
            merged_v = torch.cat([best_v, top.values], dim=1)
            merged_i = torch.cat([best_i, top.indices + vs], dim=1)
            keep = merged_v.topk(k, dim=-1)
            best_v, best_i = keep.values, merged_i.gather(1, keep.indices)
        index[start : start + v.shape[0]] = best_i
        logit[start : start + v.shape[0]] = best_v
        lse[start : start + v.shape[0]] = run_lse
        if progress is not None:
            progress.update(v.shape[0])
    return TopTokens(index=index, logit=logit, prob=torch.exp(logit - lse[:, None]), lse=lse)
