"""``Model``: a real Hugging Face causal LM, its tokenizer and its architecture adapter."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from interp import attention
from interp.adapters import Adapter, adapter_for
from interp.errors import OutOfRangeError, PromptTooLongError
from interp.sites import GLOBAL_SITES, LAYER_SITES, Site, Where, all_site_names, expand
from interp.tracing import Hooks, Reducer, Trace

Inputs = Any  # str | list[str] | token ids (list or tensor) | {"input_ids", "attention_mask"}


@dataclass(frozen=True)
class ModelConfig:
    """The shapes analyses need, read from the HF config and modules."""

    model_type: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_mlp: int
    d_vocab: int
    n_ctx: int

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads


class Model:
    """Wraps a loaded HF causal LM and tokenizer; tracing and interventions hang off it.

    Build one with ``interp.load(...)``; ``Model(hf_model, tokenizer)`` wraps a model you
    already have. Attention stays on the model's own implementation (SDPA by default).

    >>> import interp
    >>> model = interp.load("smollm2-135m")                        # doctest: +SKIP
    >>> with model.trace("The capital of France is", sites="blocks.*.attn.hook_q") as tr:
    ...     pass                                                    # doctest: +SKIP
    >>> tr["blocks.3.attn.hook_q"].shape                            # doctest: +SKIP
    torch.Size([1, 5, 9, 64])
    """

    def __init__(self, hf_model: Any, tokenizer: Any, *, name: str | None = None, source: str | None = None):
        self.hf = hf_model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(hf_model.config, "_name_or_path", None) or type(hf_model).__name__
        self.source = source
        self.adapter: Adapter = adapter_for(hf_model)
        self.blocks: list[torch.nn.Module] = list(self.module(self.adapter.layers).children())
        self.cfg = self._read_config()
        attention.install(hf_model, [self.module(self._in_block(i, self.adapter.attn)) for i in range(len(self.blocks))])
        self._available = self._available_leaves()
        self._site_names = all_site_names(self.cfg.n_layers, self._available)
        if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"Model({self.name!r}, {c.model_type}: {c.n_layers} layers x {c.n_heads} heads "
            f"({c.n_kv_heads} kv), d_model {c.d_model}, attention {attention.base_implementation(self.hf)})"
        )

    # -- structure ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    def module(self, path: str) -> torch.nn.Module:
        """A submodule by dotted path (``model.layers.3.mlp``)."""
        return self.hf.get_submodule(path)

    def _in_block(self, layer: int, path: str) -> str:
        return f"{self.adapter.layers}.{layer}.{path}"

    def _read_config(self) -> ModelConfig:
        config = self.hf.config.get_text_config() if hasattr(self.hf.config, "get_text_config") else self.hf.config
        a = self.adapter
        n_heads = config.num_attention_heads
        o_in = self._in_features(self._in_block(0, a.o_proj))
        d_mlp = self._in_features(self._in_block(0, a.mlp_out))
        return ModelConfig(
            model_type=config.model_type,
            n_layers=len(self.blocks),
            n_heads=n_heads,
            n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
            d_head=o_in // n_heads,
            d_model=config.hidden_size,
            d_mlp=d_mlp,
            d_vocab=self.weight(a.unembed).shape[0],
            n_ctx=config.max_position_embeddings,
        )

    def weight(self, path: str) -> torch.Tensor:
        """The weight of a linear (or GPT-2 Conv1D) module."""
        w = self.module(path).weight
        assert isinstance(w, torch.Tensor)
        return w

    def _in_features(self, path: str) -> int:
        return int(self.weight(path).shape[0 if self.adapter.conv1d else 1])

    def _available_leaves(self) -> set[str]:
        leaves = {s.rsplit(".", 1)[-1] for s in LAYER_SITES} | set(GLOBAL_SITES)
        if self.adapter.mlp_pre_linear is None:
            leaves.discard("hook_pre_linear")
        if self.adapter.is_parallel(self.hf.config):
            leaves.discard("hook_resid_mid")
        return leaves

    def site_names(self) -> list[str]:
        """Every site this model has."""
        return list(self._site_names)

    def resolve(self, patterns: str | Sequence[str]) -> list[Site]:
        """Names or globs to resolved sites; unknown names, layers out of range: clear errors."""
        names = expand(list([patterns] if isinstance(patterns, str) else patterns), self._site_names, self.cfg.n_layers)
        return [self._site(n) for n in names]

    def _site(self, name: str) -> Site:
        a = self.adapter
        if name == "hook_embed":
            return Site(name, None, name, a.embed, "output")
        if name == "ln_final.hook_normalized":
            return Site(name, None, "hook_normalized", a.final_norm, "output")
        if name == "logits":
            return Site(name, None, name, a.unembed, "output")
        _, layer_s, rest = name.split(".", 2)
        layer, leaf = int(layer_s), rest.rsplit(".", 1)[-1]
        block = f"{a.layers}.{layer}"
        table: dict[str, tuple[str, Where]] = {
            "hook_resid_pre": (block, "input"),
            "hook_resid_mid": (self._in_block(layer, a.ln_mlp), "input"),
            "hook_resid_post": (block, "output"),
            "hook_attn_out": (self._in_block(layer, a.attn), "output"),
            "hook_mlp_out": (self._in_block(layer, a.mlp), "output"),
            "hook_q": (self._in_block(layer, a.attn), "qkv"),
            "hook_k": (self._in_block(layer, a.attn), "qkv"),
            "hook_v": (self._in_block(layer, a.attn), "qkv"),
            "hook_z": (self._in_block(layer, a.o_proj), "input"),
            "hook_result": (self._in_block(layer, a.o_proj), "result"),
            "hook_pre": (self._in_block(layer, a.mlp_pre), "output"),
            "hook_pre_linear": (self._in_block(layer, a.mlp_pre_linear or ""), "output"),
            "hook_post": (self._in_block(layer, a.mlp_out), "input"),
        }
        path, where = table[leaf]
        return Site(name, layer, leaf, path, where)

    def check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.cfg.n_layers:
            raise OutOfRangeError("layer", layer, self.cfg.n_layers)
        return layer

    def check_heads(self, heads: int | Sequence[int] | None, n: int | None = None) -> list[int]:
        """Head indices, all of them for ``None``; out of range: a clear error."""
        n = n or self.cfg.n_heads
        if heads is None:
            return list(range(n))
        heads = [heads] if isinstance(heads, int) else list(heads)
        for h in heads:
            if not 0 <= h < n:
                raise OutOfRangeError("head", h, n)
        return heads

    def o_proj_per_head(self, layer: int) -> torch.Tensor:
        """W_O split by head: ``[n_heads, d_head, d_model]``."""
        weight = self.weight(self._in_block(layer, self.adapter.o_proj))
        w = weight if self.adapter.conv1d else weight.T  # [n_heads * d_head, d_model]
        return w.reshape(self.cfg.n_heads, self.cfg.d_head, -1)

    # -- inputs -------------------------------------------------------------------------------
    def to_tokens(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        """Text, a batch of texts (left-padded) or token ids to ``input_ids`` + ``attention_mask``."""
        if isinstance(inputs, dict) or hasattr(inputs, "keys"):
            ids = torch.as_tensor(inputs["input_ids"])
            mask = inputs.get("attention_mask")
            mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask)
        elif isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str)):
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            side = self.tokenizer.padding_side
            self.tokenizer.padding_side = "left"
            try:
                enc = self.tokenizer(texts, return_tensors="pt", padding=True)
            finally:
                self.tokenizer.padding_side = side
            ids, mask = enc["input_ids"], enc["attention_mask"]
        else:
            ids = torch.as_tensor(inputs, dtype=torch.long)
            mask = torch.ones_like(ids)
        if ids.ndim == 1:
            ids, mask = ids[None], mask[None]
        if ids.shape[1] > self.cfg.n_ctx:
            raise PromptTooLongError(
                f"input has {ids.shape[1]} tokens but {self.name} has a context window of {self.cfg.n_ctx}; "
                f"shorten it to at most {self.cfg.n_ctx} tokens"
            )
        if ids.numel() and (int(ids.max()) >= self.cfg.d_vocab or int(ids.min()) < 0):
            raise OutOfRangeError("token id", int(ids.max()), self.cfg.d_vocab)
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    # -- tracing ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def trace(
        self,
        inputs: Inputs = None,
        sites: str | Sequence[str] = (),
        *,
        interventions: dict[str, Callable | Sequence[Callable]] | None = None,
        reduce: dict[str, Reducer] | None = None,
        positions: Any = None,
        to_cpu: bool = True,
    ) -> Iterator[Trace]:
        """Capture ``sites`` (names or globs) and apply ``interventions`` while the block runs.

        With ``inputs`` the forward pass runs on entry (``trace.logits``); inside the block
        you may also call ``model.hf(...)`` or ``model.generate(...)`` yourself. ``reduce``
        maps a site (or glob) to a function applied to the value as it passes, whose result
        is stored instead of the tensor. ``positions`` keeps only those positions of
        captured tensors. Hooks are removed on exit, also when the block raises.

        >>> with model.trace("Hello world", sites=["blocks.0.hook_resid_post", "logits"]) as tr:
        ...     pass                                                    # doctest: +SKIP
        >>> tr["logits"].shape                                          # doctest: +SKIP
        """
        capture = self.resolve(sites) if sites else []
        by_site: dict[Site, list[Callable]] = {}
        for pattern, fns in (interventions or {}).items():
            fns = [fns] if callable(fns) else list(fns)
            for site in self.resolve(pattern):
                by_site.setdefault(site, []).extend(fns)
        reducers = {s.name: fn for pattern, fn in (reduce or {}).items() for s in self.resolve(pattern)}
        for name in reducers:
            if name not in {s.name for s in capture}:
                capture.append(self._site(name))
        trace = Trace()
        trace.n_layers = self.cfg.n_layers
        hooks = Hooks(self, trace, capture, by_site, reducers, positions=positions, to_cpu=to_cpu)
        hooks.install()
        try:
            if inputs is not None:
                tokens = self.to_tokens(inputs)
                trace.input_ids, trace.attention_mask = tokens["input_ids"], tokens["attention_mask"]
                with torch.no_grad():
                    trace.logits = self.hf(**tokens, use_cache=False).logits
            yield trace
        finally:
            hooks.remove()

    def run(self, inputs: Inputs, *, interventions: dict[str, Any] | None = None) -> torch.Tensor:
        """Logits ``[batch, pos, vocab]``, optionally under interventions."""
        with self.trace(inputs, interventions=interventions) as tr:
            assert tr.logits is not None
            return tr.logits

    def generate(
        self,
        inputs: Inputs,
        max_new_tokens: int = 20,
        *,
        interventions: dict[str, Any] | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Greedy continuation (unless sampling is asked for) of each prompt, as text.

        The (padded) prompt plus ``max_new_tokens`` must fit in the context window; otherwise
        ``PromptTooLongError`` says by how much, before anything runs.
        """
        tokens = self.to_tokens(inputs)
        n_prompt, n_ctx = tokens["input_ids"].shape[1], self.cfg.n_ctx
        if max_new_tokens is not None and n_prompt + max_new_tokens > n_ctx:
            room = f"ask for at most {n_ctx - n_prompt} new tokens or " if n_prompt < n_ctx else ""
            raise PromptTooLongError(
                f"prompt of {n_prompt} tokens + max_new_tokens={max_new_tokens} is {n_prompt + max_new_tokens} "
                f"tokens but {self.name} has a context window of {n_ctx}; {room}shorten the prompt"
            )
        kwargs = {"do_sample": False, "pad_token_id": self.tokenizer.pad_token_id, **generate_kwargs}
        with self.trace(interventions=interventions), torch.no_grad():
            out = self.hf.generate(**tokens, max_new_tokens=max_new_tokens, **kwargs)
        new = out[:, tokens["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)

