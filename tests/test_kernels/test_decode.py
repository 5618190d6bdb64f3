"""Chunked top-k decoding against the dense product."""

import pytest
import torch

from interp.kernels.decode import decode_topk


@pytest.mark.parametrize("chunk,vocab_block", [(7, 13), (1000, 1000), (3, 64)])
def test_chunked_equals_dense(chunk, vocab_block):
    g = torch.Generator().manual_seed(0)
    vectors, unembed, bias = torch.randn(50, 16, generator=g), torch.randn(300, 16, generator=g), torch.randn(300, generator=g)
    got = decode_topk(vectors, unembed, k=5, bias=bias, chunk=chunk, vocab_block=vocab_block)
    dense = (vectors.double() @ unembed.double().T + bias.double()).softmax(-1)
    top = dense.topk(5, dim=-1)
    assert torch.equal(got.index, top.indices)
    torch.testing.assert_close(got.prob.double(), top.values, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.lse.double(), torch.logsumexp(vectors.double() @ unembed.double().T + bias.double(), -1), atol=1e-5, rtol=0)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"unembed must be \[vocab, 4\]"):
        decode_topk(torch.randn(2, 4), torch.randn(10, 5))
    with pytest.raises(ValueError, match="k must be"):
        decode_topk(torch.randn(2, 4), torch.randn(10, 4), k=11)
