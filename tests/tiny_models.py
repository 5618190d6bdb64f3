"""Tiny random-config models of every adapter family, built in memory (no downloads)."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, max_position_embeddings=256)

CONFIGS = {
    # GQA: 4 query heads share 2 kv heads.
    "llama": lambda: LlamaConfig(**COMMON, num_attention_heads=4, num_key_value_heads=2),
    # Sliding window shorter than the test prompts, so the window mask matters.
    "mistral": lambda: MistralConfig(**COMMON, num_attention_heads=4, num_key_value_heads=1, sliding_window=7),
    "qwen2": lambda: Qwen2Config(**COMMON, num_attention_heads=4, num_key_value_heads=2),
    "qwen3": lambda: Qwen3Config(**COMMON, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    # MQA, sliding and global layers, q/k norms and attention soft-capping.
    "gemma3": lambda: Gemma3TextConfig(
        **COMMON,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=6,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        query_pre_attn_scalar=16,
        attn_logit_softcapping=3.0,
    ),
    "gpt2": lambda: GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=3, n_head=4, n_positions=256, bos_token_id=0, eos_token_id=0),
    "gpt_neox": lambda: GPTNeoXConfig(
        **COMMON, num_attention_heads=4, rotary_pct=0.5, use_parallel_residual=True
    ),
    "gpt_neox_sequential": lambda: GPTNeoXConfig(
        **COMMON, num_attention_heads=4, rotary_pct=0.25, use_parallel_residual=False
    ),
}


def build(family: str, seed: int = 0, attn: str = "sdpa"):
    """A random-weight HF causal LM of ``family`` in float32, eval mode."""
    torch.manual_seed(seed)
    config = CONFIGS[family]()
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32)
    # Some inits leave biases and norm gains at trivial values; perturb them so tests see them.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


class NullTokenizer:
    """Enough of a tokenizer for tests that pass token ids."""

    pad_token = eos_token = "<pad>"
    pad_token_id = eos_token_id = 0
    padding_side = "left"

    def batch_decode(self, ids, skip_special_tokens=True):
        return [" ".join(str(int(t)) for t in row) for row in ids]


def padded_batch(seed: int = 0, lengths=(24, 17)) -> dict[str, torch.Tensor]:
    """Left-padded random token ids with their attention mask."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, width - n :] = torch.randint(1, VOCAB, (n,), generator=g)
        mask[i, width - n :] = 1
    return {"input_ids": ids, "attention_mask": mask}
