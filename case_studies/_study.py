"""What the training case studies (``reddy_icl``, ``induction_emergence``, ``regular_languages``)
share: figures written beside one ``plotly.min.js``, tables written as parquet, a stopwatch for the
parts of a run, number formatting for the summaries and, for the two that train a Hugging Face
Llama, a one-token-per-character tokenizer, the model, AdamW with a linear warm-up and one
training step. Not a study itself: the scripts import it from their own folder.

Every study writes its results as every interp command does, through one output folder
(``interp.results.folders.output_folder(out, kind=STUDY)``: checked and locked before the work starts,
the files land together when it succeeds, a user's files are never touched), JSON through
``interp.results.protocol.write_json`` (strict: NaN as null) and tables through ``interp.results.protocol.write_table``."""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch

from interp.results.folders import OutputFolder
from interp.results.protocol import write_table


# -- command line ---------------------------------------------------------------------------------
def arguments(doc: str | None, out: Path) -> argparse.ArgumentParser:
    """A study's parser with the options every training study takes: ``--out``, ``--smoke`` and
    ``--render``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=out, help="the results folder")
    parser.add_argument("--smoke", action="store_true", help="a tiny run of every part (CI)")
    parser.add_argument("--render", action="store_true",
                        help="rebuild summary.md and the figures from the tables saved in --out (no training)")
    return parser


# -- files ----------------------------------------------------------------------------------------
def write_figures(figs: dict, out: OutputFolder) -> list[str]:
    """Each figure as ``NAME.html`` loading the one ``plotly.min.js`` written into ``out`` (so they
    draw offline), and ``NAME.png`` where kaleido is installed; the names written, in order."""
    from plotly.offline import get_plotlyjs

    written = ["plotly.min.js"]
    out.write_text("plotly.min.js", get_plotlyjs())
    for name, fig in figs.items():
        out.write_text(f"{name}.html", fig.to_html(include_plotlyjs="directory"))
        written.append(f"{name}.html")
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return written
    for name, fig in figs.items():
        out.write_bytes(f"{name}.png", fig.to_image(format="png"))
        written.append(f"{name}.png")
    return written


def write_tables(out: OutputFolder, tables: dict[str, pd.DataFrame]) -> None:
    """``{file name: frame}`` as parquet files in ``out`` (no index; ``interp.results.protocol.write_table``)."""
    for name, frame in tables.items():
        write_table(out, name, frame)


class Stopwatch:
    """Wall-clock seconds of the named parts of a run, and of the whole since it was made."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    def done(self) -> dict[str, float]:
        """The parts' seconds and ``total``, rounded to tenths."""
        return {**{k: round(v, 1) for k, v in self.seconds.items()}, "total": round(time.perf_counter() - self.start, 1)}


# -- summaries ------------------------------------------------------------------------------------
def fmt(v, digits: int = 3, whole_from: float | None = None) -> str:
    """A number for a summary: ``—`` for None or NaN, floats with ``digits`` decimals (none from
    ``whole_from`` up, when given), anything else as it prints."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.0f}" if whole_from is not None and abs(v) >= whole_from else f"{v:.{digits}f}"
    return str(v)


def joined(values: Iterable, **kw) -> str:
    return ", ".join(fmt(v, **kw) for v in values)


def table(header: list[str], rows: Iterable[Iterable]) -> list[str]:
    """A markdown table's lines (cells already formatted)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def files_line(names: list[str], what: str) -> str:
    """The closing line of a summary: the files written, then what the figures show."""
    return "Files: " + ", ".join(f"`{n}`" for n in names) + ". " + what


# -- small Llama models ---------------------------------------------------------------------------
def char_tokenizer(vocab: list[str]):
    """A ``PreTrainedTokenizerFast`` with one token per character; ``vocab[0]`` is BOS (also used
    for unknown characters, padding and EOS)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bos = vocab[0]
    tok = Tokenizer(models.WordLevel({v: i for i, v in enumerate(vocab)}, unk_token=bos))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, unk_token=bos, pad_token=bos, eos_token=bos)


def llama(vocab: int, layers: int, heads: int, d_model: int, head_dim: int, d_mlp: int, positions: int, seed: int,
          init_std: float = 0.02, rope_theta: float = 10_000.0):
    """A Hugging Face ``LlamaForCausalLM`` (BOS = 0, untied embeddings) seeded with ``seed``;
    ``d_mlp = 0`` makes it attention-only (its MLPs have no units and add nothing)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=d_mlp, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, head_dim=head_dim,
                      max_position_embeddings=positions,
                      rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
                      bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False,
                      initializer_range=init_std)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")  # d_mlp = 0
        return LlamaForCausalLM(cfg)


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, warmup: int):
    """AdamW (betas 0.9, 0.98) decaying the matrices only, with a linear warm-up over ``warmup``
    steps; ``(optimizer, scheduler)``."""
    params = [p for p in model.parameters() if p.numel()]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))


def train_step(model, batch: torch.Tensor, opt, sched, clip: float = 1.0) -> float:
    """One step of next-token training on ``batch`` (``[n, length]`` token ids); the loss."""
    loss = model(input_ids=batch, labels=batch).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    sched.step()
    return loss.item()
