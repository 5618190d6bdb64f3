"""``Model``: a real Hugging Face causal LM, its tokenizer and its architecture adapter."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from interp.core import attention
from interp.core.adapters import Adapter, adapter_for
from interp.core.inputs import Inputs, check_positions, describe, to_tokens, token_id
from interp.core.masks import position_kwargs
from interp.core.neighbours import to_nnsight
from interp.core.sites import GLOBAL_SITES, LAYER_SITES, Pattern, Site, Where, axes, resolve, site_names
from interp.core.tracing import Hooks, MaskEdit, Reducer, StopForward, Trace, check_slice
from interp.errors import (
    BadInputError,
    PromptTooLongError,
    UsageError,
    check_index,
    check_indices,
    whole_number,
)

_V = TypeVar("_V")
BySite = Mapping[str, _V] | Mapping[Pattern, _V]  # interventions= and reduce=: site (any Pattern) -> value
@dataclass(frozen=True)
class ModelConfig:
    """The shapes analyses need, read from the HF config and modules.

    Attributes:
        model_type: the Hugging Face ``model_type`` (``llama``, ``gemma3_text``, ...).
        n_layers: transformer blocks.
        n_heads: query heads per layer.
        n_kv_heads: key/value heads per layer (fewer under GQA/MQA).
        d_head: width of one head.
        d_model: width of the residual stream.
        d_mlp: MLP neurons per layer.
        d_vocab: vocabulary size (rows of the unembedding).
        n_ctx: the longest context the model takes.
    """

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

    Args:
        name: a display name (default: the model's ``name_or_path``).
        source: where the model came from (a bundled name, folder or file), kept for reports.

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
        attention.install(hf_model, [self.attn_module(i) for i in range(len(self.blocks))])
        self.site_templates = self._site_templates()
        self._site_names = site_names(self.site_templates, self.cfg.n_layers)
        self._open_traces: list[Trace] = []  # traces whose block is running, innermost last
        if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def open_traces(self) -> tuple[Trace, ...]:
        """The traces whose ``with`` block is running, innermost last."""
        return tuple(self._open_traces)

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

    def in_block(self, layer: int, path: str) -> str:
        """The dotted path (for :meth:`module`, :meth:`weight`) of ``path`` inside block ``layer``:
        ``in_block(3, "mlp.up_proj")`` is ``model.layers.3.mlp.up_proj`` on a Llama."""
        return f"{self.adapter.layers}.{layer}.{path}"

    def attn_module(self, layer: int) -> torch.nn.Module:
        """The attention module of block ``layer`` (where q/k/v hooks, observers and mask edits attach)."""
        return self.module(self.in_block(layer, self.adapter.attn))

    def sliding_window(self, layer: int) -> int | None:
        """The sliding window of ``layer``'s attention (Gemma 3's local layers, Qwen2's sliding
        layers, Mistral with a window), ``None`` where it reads every earlier key."""
        config = self.hf.config.get_text_config() if hasattr(self.hf.config, "get_text_config") else self.hf.config
        module = self.attn_module(layer)
        window = module.sliding_window if hasattr(module, "sliding_window") else getattr(config, "sliding_window", None)
        return window if isinstance(window, int) and window > 0 else None

    def _read_config(self) -> ModelConfig:
        config = self.hf.config.get_text_config() if hasattr(self.hf.config, "get_text_config") else self.hf.config
        a = self.adapter
        n_heads = config.num_attention_heads
        o_in = self._in_features(self.in_block(0, a.o_proj))
        d_mlp = self._in_features(self.in_block(0, a.mlp_out))
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

    def _site_templates(self) -> tuple[str, ...]:
        """The site templates this model has (``blocks.{l}.attn.hook_z``, ``logits``, ...)."""
        missing = set()
        if self.adapter.mlp_pre_linear is None:
            missing.add("hook_pre_linear")
        if self.adapter.is_parallel(self.hf.config):
            missing |= {"hook_resid_mid", "hook_mlp_in"}
        return tuple(t for t in (*GLOBAL_SITES, *LAYER_SITES) if t.rsplit(".", 1)[-1] not in missing)

    def site_names(self) -> list[str]:
        """Every site this model has."""
        return list(self._site_names)

    def resolve(self, patterns: Pattern | Sequence[Pattern], among: Sequence[str] | None = None,
                what: str = "site", layers: Sequence[int] | None = None) -> list[Site]:
        """Sites named by ``patterns`` in the one site grammar (``interp.core.sites.resolve``): full
        names, globs, TransformerLens short names (``z``: every layer) or ``(short name, layer)``
        pairs. ``among``: only these site templates (an analysis's supported sites; those this
        model lacks are left out), named ``what`` in errors; ``layers`` keeps only those layers.
        Unknown names and layers out of range: clear errors.
        """
        templates = self.site_templates if among is None else [t for t in among if t in self.site_templates]
        names = resolve(patterns, templates, self.cfg.n_layers, what, layers)
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
            "hook_resid_mid": (self.in_block(layer, a.ln_mlp), "input"),
            "hook_attn_in": (self.in_block(layer, a.ln_attn), "input"),
            "hook_mlp_in": (self.in_block(layer, a.ln_mlp), "input"),
            "hook_resid_post": (block, "output"),
            "hook_attn_out": (self.in_block(layer, a.attn), "output"),
            "hook_mlp_out": (self.in_block(layer, a.mlp), "output"),
            "hook_q": (self.in_block(layer, a.attn), "qkv"),
            "hook_k": (self.in_block(layer, a.attn), "qkv"),
            "hook_v": (self.in_block(layer, a.attn), "qkv"),
            "hook_z": (self.in_block(layer, a.o_proj), "input"),
            "hook_result": (self.in_block(layer, a.o_proj), "result"),
            "hook_pre": (self.in_block(layer, a.mlp_pre), "output"),
            "hook_pre_linear": (self.in_block(layer, a.mlp_pre_linear or ""), "output"),
            "hook_post": (self.in_block(layer, a.mlp_out), "input"),
        }
        path, where = table[leaf]
        return Site(name, layer, leaf, path, where)

    def check_layer(self, layer: int) -> int:
        """``layer`` as an int; not an integer (6.0, True) or outside the model: a clear error."""
        return check_index(layer, self.cfg.n_layers, "layer")

    def site_dims(self, site: str | Site) -> list[tuple[str, int]]:
        """The axes of a site after ``[batch, pos]``, named: ``[("n_heads", 9), ("d_head", 64)]``."""
        name = site.name if isinstance(site, Site) else site
        return [(axis, int(getattr(self.cfg, axis))) for axis in axes(name)]

    def check_heads(self, heads: int | Sequence[int] | None, n: int | None = None) -> list[int]:
        """Head indices, all of them for ``None``; out of range: a clear error."""
        return check_indices(heads, n or self.cfg.n_heads, "head")

    def o_proj_per_head(self, layer: int) -> torch.Tensor:
        """W_O split by head: ``[n_heads, d_head, d_model]``."""
        weight = self.weight(self.in_block(layer, self.adapter.o_proj))
        w = weight if self.adapter.conv1d else weight.T  # [n_heads * d_head, d_model]
        return w.reshape(self.cfg.n_heads, self.cfg.d_head, -1)

    # -- inputs -------------------------------------------------------------------------------
    def to_tokens(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        """Text, a batch of texts (left-padded) or token ids to ``input_ids`` + ``attention_mask`` on
        the model's device, checked against its tokenizer, context window and vocabulary (see
        :func:`interp.core.inputs.to_tokens` for what is accepted)."""
        ids, mask = to_tokens(inputs, self.tokenizer, n_ctx=self.cfg.n_ctx, d_vocab=self.cfg.d_vocab, name=self.name)
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def check_generation(self, tokens: dict[str, torch.Tensor], max_new_tokens: int | None,
                         interventions: BySite[Any] | None = None) -> None:
        """What ``generate`` checks before it runs: ``max_new_tokens``, the context window, interventions."""
        if max_new_tokens is not None:
            whole_number(max_new_tokens, 1, "max_new_tokens")
        n_prompt, n_ctx = tokens["input_ids"].shape[1], self.cfg.n_ctx
        if max_new_tokens is not None and n_prompt + max_new_tokens > n_ctx:
            room = f"ask for at most {n_ctx - n_prompt} new tokens or " if n_prompt < n_ctx else ""
            raise PromptTooLongError(
                f"prompt of {n_prompt} tokens + max_new_tokens={max_new_tokens} is {n_prompt + max_new_tokens} "
                f"tokens but {self.name} has a context window of {n_ctx}; {room}shorten the prompt"
            )
        by_site = self._plan_interventions(interventions)
        self._check_interventions(by_site, n_prompt)
        if max_new_tokens is None or max_new_tokens > 1:
            self._check_interventions(by_site, 1, note=" at each generate step after the prompt, which passes only the "
                                      "new token: -1 (or 0) fits every step, a slice such as slice(3, None) acts on "
                                      "the prompt only", skip=("hook_k", "hook_v"), prompt=False)

    def token_id(self, token: Any, what: str = "token") -> int:
        """A token given as a string that is exactly one token of the tokenizer (no special tokens
        added), or as an id in the vocabulary; anything else: a clear error naming ``what``."""
        return token_id(token, self.tokenizer, d_vocab=self.cfg.d_vocab, name=self.name, what=what)

    # -- tracing ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def trace(
        self,
        inputs: Inputs = None,
        sites: Pattern | Sequence[Pattern] = (),
        *,
        interventions: BySite[Callable | Sequence[Callable]] | None = None,
        reduce: BySite[Reducer] | None = None,
        positions: Any = None,
        to_cpu: bool = True,
        observe: Callable | None = None,
        observe_layers: Sequence[int] | None = None,
        stop_after: int | None = None,
        mask_edits: dict[int, MaskEdit] | None = None,
    ) -> Iterator[Trace]:
        """Capture ``sites`` and apply ``interventions`` while the block runs. Sites are named as
        everywhere in interp (``interp.core.sites.resolve``): full names, globs
        (``blocks.*.attn.hook_z``), TransformerLens short names (``z``: every layer) or
        ``(short name, layer)`` pairs; so are the keys of ``interventions`` and ``reduce``.

        With ``inputs`` the forward pass runs on entry (``trace.logits``); inside the block
        you may also call ``model.hf(...)`` or ``model.generate(...)`` yourself. ``reduce``
        maps a site (or glob) to a function applied to the value as it passes, whose result
        is stored instead of the tensor. ``positions`` (an int, a list of ints, negative ones
        counting from the end, or a slice) keeps only those positions of captured tensors.
        Sites, inputs, positions and interventions (their widths, heads, units and positions,
        see ``interp.core.interventions``) are all checked before any hook is installed or any
        forward runs. Hooks are removed on exit, also when the block raises.

        ``observe(layer, q, k, spec, lse)`` is called by the attention of each of
        ``observe_layers`` (default: all) with its final queries and keys (after rotary and
        norms, ``[batch, heads, pos, d_head]``) and the rows' log-sum-exp where the fused kernel
        gives it: the feed of the attention-statistics kernels. ``stop_after``: end the
        forward pass once this layer's attention has run (the trace's logits are then
        ``None``), for analyses that need only the first layers. ``mask_edits`` maps a layer
        to ``edit(attention_module, mask, q, k) -> mask``, the attention mask that layer's
        attention function gets instead of the model's (``mask`` is None where the model relies
        on SDPA's causal flag; ``q`` ``[batch, heads, pos_q, d]`` and ``k`` with every cached
        key); ``circuits.knockout`` and ``interp.heads.compressed`` are such edits.

        A ``circuits.knockout`` must be opened before a trace with inputs, whose forward
        runs on entry: ``with knockout(model, blocked), model.trace(inputs) as tr:``.

        Nesting. A trace's hooks act on every forward pass run while its block is open, and it
        records each of them (``trace.steps(site)``; ``trace[site]`` refuses once there are
        several). A trace without inputs is a scope: traces with inputs, ``model.run`` and
        ``model.generate`` inside it are captured and intervened on by it too, as mask edits
        (``knockout``, ``compressed``) act on everything inside them. A trace with inputs is one
        run: opening another trace with inputs (``model.run``, ``run_with_cache``) inside a trace
        with inputs that captures, intervenes, observes or stops raises ``UsageError``, since
        the outer trace would capture and intervene on that run as well; capture several sites
        in one trace, or run the traces one after the other.

        >>> with model.trace("Hello world", sites=["blocks.0.hook_resid_post", "logits"]) as tr:
        ...     pass                                                    # doctest: +SKIP
        >>> tr["logits"].shape                                          # doctest: +SKIP
        """
        capture = self.resolve(sites) if sites else []
        by_site = self._plan_interventions(interventions)
        reducers: dict[str, Reducer] = {}
        for pattern, fn in (reduce or {}).items():
            if not callable(fn):
                raise BadInputError(f"reduce[{pattern!r}] must be a function of the site's tensor, got {describe(fn)}")
            reducers.update({s.name: fn for s in self.resolve(pattern)})
        for name in reducers:
            if name not in {s.name for s in capture}:
                capture.append(self._site(name))
        tokens = self.to_tokens(inputs) if inputs is not None else None
        if tokens is not None:
            self._check_not_inside_a_run()
        n_pos = int(tokens["input_ids"].shape[1]) if tokens is not None else None
        kept = check_positions(positions, n_pos)
        self._check_interventions(by_site, n_pos)
        if observe is not None and not callable(observe):
            raise BadInputError(f"observe must be a function (layer, q, k, spec, lse), got {describe(observe)}")
        observed = [self.check_layer(la) for la in observe_layers] if observe_layers is not None else \
            list(range(self.cfg.n_layers))
        if stop_after is not None:
            self.check_layer(stop_after)
        for layer, edit in (mask_edits or {}).items():
            self.check_layer(layer)
            if not callable(edit):
                raise BadInputError(f"mask_edits[{layer}] must be a function (module, mask, q, k) -> mask, got "
                                    f"{describe(edit)}")
        trace = Trace()
        trace.n_layers = self.cfg.n_layers
        trace.acts = bool(capture or by_site or observe is not None or stop_after is not None)
        hooks = Hooks(self, trace, capture, by_site, reducers, positions=kept, to_cpu=to_cpu,
                      observers={la: observe for la in observed} if observe is not None else None, stop_after=stop_after,
                      mask_edits=mask_edits)
        self._open_traces.append(trace)
        try:
            hooks.install()  # inside the try: an install that fails midway removes what it installed
            if tokens is not None:
                trace.input_ids, trace.attention_mask = tokens["input_ids"], tokens["attention_mask"]
                trace.ran_forward = True
                with torch.no_grad(), contextlib.suppress(StopForward):
                    trace.logits = self.hf(**tokens, **position_kwargs(tokens["attention_mask"]), use_cache=False).logits
            yield trace
        except StopForward:  # a forward run inside the block stopped at ``stop_after``
            pass
        else:
            hooks.check_selections()
        finally:
            hooks.remove()
            self._open_traces.remove(trace)

    def _plan_interventions(self, interventions: BySite[Any] | None) -> dict[Site, list[Callable]]:
        """Resolved sites and their functions; a non-callable: a clear error."""
        if interventions is not None and not isinstance(interventions, dict):
            raise BadInputError(f"interventions must be a dict of site (or glob) -> intervention, got "
                                f"{describe(interventions)}")
        by_site: dict[Site, list[Callable]] = {}
        for pattern, fns in (interventions or {}).items():
            fns = [fns] if callable(fns) else list(fns) if isinstance(fns, (list, tuple)) else [fns]
            for fn in fns:
                if not callable(fn):
                    raise BadInputError(f"interventions[{pattern!r}] must be an intervention (interp.core.interventions) or "
                                        f"a function (value, site) -> value, got {describe(fn)}")
            for site in self.resolve(pattern):
                if site.leaf == "hook_resid_mid":
                    raise BadInputError(
                        f"interventions[{pattern!r}]: {site.name} cannot be edited: the decoder layer keeps its own copy "
                        f"of the residual there, so an edit would reach the MLP only. Edit blocks.{site.layer}.hook_mlp_in "
                        f"for the MLP's input alone, or blocks.{site.layer}.hook_attn_out / hook_resid_post for the stream")
                by_site.setdefault(site, []).extend(fns)
        return by_site

    def _check_not_inside_a_run(self) -> None:
        """A trace with inputs may not open inside a trace with inputs that has hooks of its own."""

        outer = [t for t in self._open_traces if t.ran_forward and t.acts]
        if outer:
            raise UsageError(
                "model.trace(inputs) (or model.run / run_with_cache) was opened inside another `with "
                "model.trace(inputs, ...)` block that captures, intervenes or observes; the outer trace's hooks would "
                "act on this run too and record it beside its own forward. Capture several sites in one trace "
                "(sites=[...]), or run the traces one after the other; to run more forwards under the outer trace's "
                "hooks, call model.hf(...) or model.generate(...) in its block and read them with trace.steps(site)")

    def _check_interventions(self, by_site: dict[Site, list[Callable]], n_pos: int | None, note: str = "",
                             skip: tuple[str, ...] = (), prompt: bool = True) -> None:
        """Check each intervention against its site (width, heads, units, positions) before any run;
        ``prompt``: ``n_pos`` is the prompt's length, where a ``positions=`` slice must keep a position."""
        for site, fns in by_site.items():
            if site.leaf in skip:
                continue
            for fn in fns:
                check = getattr(fn, "check", None)
                if callable(check):
                    check(site.name, self.site_dims(site), n_pos, note)
                selection = getattr(fn, "positions", None)
                if prompt and n_pos is not None and isinstance(selection, slice):
                    label = getattr(fn, "label", "intervention")
                    check_slice(selection, n_pos, f"{label} at {site.name}: positions= keeps no position of the input "
                                                  f"of {n_pos} token{'s' if n_pos != 1 else ''} (a slice keeps the "
                                                  "positions it overlaps; negative ones count from the end)")

    def run_with_cache(self, inputs: Inputs, names_filter: Pattern | Sequence[Pattern] | Callable[[str], bool] | None = None,
                       *, interventions: BySite[Any] | None = None, positions: Any = None,
                       to_cpu: bool = True) -> tuple[torch.Tensor, Trace]:
        """``(logits, cache)``, as TransformerLens's ``run_with_cache``: ``cache[name]`` is the
        value of each captured site (also ``cache["z", 3]``). ``names_filter``: sites (names,
        globs, short names, ``(short name, layer)`` pairs), or a function of the name; ``None`` captures every site except the per-head
        ``hook_result`` (``[batch, pos, n_heads, d_model]``; ask for it by name).

        >>> logits, cache = model.run_with_cache("The cat sat", names_filter="blocks.*.hook_resid_post")  # doctest: +SKIP
        >>> cache["resid_post", 3].shape                                                   # doctest: +SKIP
        """
        if names_filter is None:
            sites: Pattern | Sequence[Pattern] = [n for n in self.site_names() if not n.endswith("hook_result")]
        elif callable(names_filter):
            sites = [n for n in self.site_names() if names_filter(n)]
            if not sites:
                raise BadInputError(f"names_filter matches no site of {self.name}; its sites are "
                                    f"{', '.join(self.site_names()[:3])}, ...")
        else:
            sites = names_filter
        with self.trace(inputs, sites, interventions=interventions, positions=positions, to_cpu=to_cpu) as tr:
            pass
        assert tr.logits is not None
        return tr.logits, tr

    def to_nnsight(self, **kwargs: Any) -> Any:
        """An nnsight ``LanguageModel`` over this model's own modules and weights (no copy), with
        its tokenizer, so nnsight interventions and our analyses can be mixed. ``kwargs`` go to
        ``LanguageModel``. Needs nnsight (``pip install 'interp[nnsight]'``).

        >>> lm = model.to_nnsight()                                               # doctest: +SKIP
        >>> with lm.trace("The cat sat"):                                         # doctest: +SKIP
        ...     resid = lm.model.layers[3].output.save()      # blocks.3.hook_resid_post
        """

        return to_nnsight(self.hf, self.tokenizer, **kwargs)

    def run(self, inputs: Inputs, *, interventions: BySite[Any] | None = None) -> torch.Tensor:
        """Logits ``[batch, pos, vocab]``, optionally under interventions."""
        with self.trace(inputs, interventions=interventions) as tr:
            assert tr.logits is not None
            return tr.logits

    def generate(
        self,
        inputs: Inputs,
        max_new_tokens: int = 20,
        *,
        interventions: BySite[Any] | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Greedy continuation (unless sampling is asked for) of each prompt, as text.

        The (padded) prompt plus ``max_new_tokens`` must fit in the context window; otherwise
        ``PromptTooLongError`` says by how much, before anything runs. Interventions are checked
        against the prompt and, since every step after the prompt passes only the new token
        (``hook_k``/``hook_v`` excepted: they hold the whole cache), against one position.
        """
        tokens = self.to_tokens(inputs)
        self.check_generation(tokens, max_new_tokens, interventions)
        kwargs = {"do_sample": False, "pad_token_id": self.tokenizer.pad_token_id, **generate_kwargs}
        outer = [t for t in self._open_traces if not t.ran_forward]
        with self.trace(interventions=interventions), torch.no_grad():
            out = self.hf.generate(**tokens, max_new_tokens=max_new_tokens, **kwargs)
        new = out[:, tokens["input_ids"].shape[1] :]
        # Traces open around this call see the padding of the prompt (for attention_pattern).
        mask = torch.cat([tokens["attention_mask"], torch.ones_like(new)], dim=1)
        for t in outer:
            t.input_ids, t.attention_mask = out, mask
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)

