"""Small report folders in the schemas the app reads, and a tiny model folder that ``interp.load`` opens.

The knob and circuits schemas are those the app was built against (their real reports come from
case studies); the numbers here are made up but shaped like real ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

TINY_NAME = "tiny-llama"  # the tiny model folder's name, which interp.load uses as the model's name
KNOB_ITEMS = [
    {"context": "Paris is in England.", "question": "Where is Paris?", "prior_answer": "France", "context_answer": "England"},
    {"context": "Rome is in Spain.", "question": "Where is Rome?", "prior_answer": "Italy", "context_answer": "Spain"},
    {"context": "Berlin is in Japan.", "question": "Where is Berlin?", "prior_answer": "Germany", "context_answer": "Japan"},
]


def write_heads(folder: Path, model: str = TINY_NAME, layers: int = 3, heads: int = 4) -> Path:
    """A head-score report with a planted induction head (L2H1) and previous-token head (L1H3)."""
    from interp.heads import HeadScores

    rng = np.random.default_rng(0)
    arrays = {s: rng.uniform(0, 0.2, (layers, heads)) for s in ("prev_token", "duplicate", "induction", "induction_text")}
    arrays["induction"][2, 1] = 0.9
    arrays["prev_token"][1, 3] = 0.8
    return HeadScores.from_arrays(arrays, model=model, settings={"seed": 0}).save(folder)


def write_neurons(folder: Path, model: str = TINY_NAME, layers: int = 3, d_mlp: int = 96, k: int = 5) -> Path:
    """A decode table (``interp neurons --out``) where L1N7 and L2N3 decode to ' dog'."""
    rng = np.random.default_rng(1)
    words = [" the", " cat", " sat", " mat", " ran", " red", " a", " of", " dog", "dog"]
    rows = []
    for layer in range(layers):
        for neuron in range(d_mlp):
            toks = list(rng.choice(words[:-2], k, replace=False))
            if (layer, neuron) in ((1, 7), (2, 3)):
                toks[0 if layer == 1 else 2] = " dog"
            probs = np.sort(rng.uniform(0.001, 0.05, k))[::-1]
            rows += [{"layer": layer, "neuron": neuron, "rank": r + 1, "token": t, "token_id": 0, "prob": float(p)}
                     for r, (t, p) in enumerate(zip(toks, probs, strict=True))]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / "neurons.parquet", index=False)
    return folder


def knob_data(model: str = TINY_NAME, layer: int = 1, n_layers: int = 3) -> dict:
    """``knob.json`` as the knob analysis writes it (extra keys such as ``k`` and ``pairing`` included)."""
    ks = np.linspace(-4, 4, 9)
    sweep = []
    for method, slope, mid, step in (("das", 1.0, 0.0, 2.0), ("diff_means", 0.7, 0.5, 1.5), ("random", 0.0, 0.0, 2.0)):
        for k in ks:
            prior, context = (float(1 / (1 + np.exp(-slope * k + shift))) for shift in (1.0, -1.0))
            share = (prior + context) / 2
            sweep.append({"method": method, "k": float(k), "value": float(mid + k * step), "context_share_prior": prior,
                          "context_share_context": context, "context_share": share, "prior_share": 1 - share})
    return {
        "model": model, "settings": {"items": len(KNOB_ITEMS), "seed": 0},
        "accuracy": {"prior": 0.62, "context": 0.91}, "layers": [layer], "layer": layer,
        "flip_rate": {"das": 0.84, "diff_means": 0.71}, "random_flip_rate": 0.04, "correlation": 0.77,
        "patching": [{"pairing": pairing, "layer": i, "effect": scale * float(np.exp(-((i - layer) ** 2) / 2))}
                     for pairing, scale in (("prior->context", 0.8), ("context->prior", 0.6)) for i in range(n_layers)],
        "sweep": sweep, "items": KNOB_ITEMS,
    }


def write_knob(folder: Path, d_model: int = 64, **kwargs) -> Path:
    """``knob.json`` plus ``direction.safetensors`` with ``direction``, ``diff_means`` and ``random0``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "knob.json").write_text(json.dumps(knob_data(**kwargs), indent=1))
    g = torch.Generator().manual_seed(0)
    tensors = {name: torch.randn(d_model, generator=g) for name in ("direction", "diff_means", "random0")}
    save_file({k: v / v.norm() for k, v in tensors.items()}, str(folder / "direction.safetensors"))
    return folder


def icl_data(model: str = TINY_NAME, n_layers: int = 3, n_heads: int = 4) -> dict:
    """``icl.json`` with a summarize step early, merge heads in the middle and retrieval late."""
    rng = np.random.default_rng(2)
    layers = np.arange(n_layers)
    bump = lambda centre: np.exp(-((layers - centre) ** 2) / max(n_layers / 6, 1) ** 2)  # noqa: E731
    out: dict = {"model": model, "settings": {"k": [0, 2, 4], "seed": 0}, "versions": {"interp": "0.1.0"},
                 "accuracy": [], "summarize": [], "merge": [], "retrieval": [], "heads": [], "ablation": []}
    for ds, ceiling in (("sentiment", 0.9), ("topic", 0.75)):
        out["accuracy"] += [{"dataset": ds, "k": k, "accuracy": ceiling - 0.35 / (1 + k), "n": 50} for k in (0, 2, 4)]
        summarize, merge, retrieval = bump(n_layers * 0.3), bump(n_layers * 0.55), bump(n_layers * 0.8)
        for layer in layers.tolist():
            out["summarize"].append({"dataset": ds, "layer": layer, "alignment": float(summarize[layer])})
            out["merge"].append({"dataset": ds, "layer": layer, "heads_above": int(round(3 * merge[layer])),
                                 "mean_score": float(0.5 * merge[layer])})
            out["retrieval"].append({"dataset": ds, "layer": layer, "induction_heads": int(round(3 * retrieval[layer])),
                                     "correct_induction_heads": int(round(2 * retrieval[layer]))})
            for head in range(n_heads):
                out["heads"].append({"dataset": ds, "layer": layer, "head": head,
                                     "merge": float(merge[layer] * rng.uniform()),
                                     "retrieval": float(retrieval[layer] * rng.uniform()),
                                     "correct": bool(rng.uniform() < retrieval[layer])})
        for quarter in range(4):
            for step, drop in (("summarize", 0.3), ("merge", 0.2), ("retrieval", 0.25)):
                real = drop if quarter == {"summarize": 1, "merge": 2, "retrieval": 3}[step] else 0.02
                out["ablation"].append({"dataset": ds, "step": step, "matched_step": step, "quarter": quarter,
                                        "layers": [quarter], "edges": 12, "accuracy": ceiling - real,
                                        "baseline_accuracy": ceiling, "drop": real, "seed": None})
                for seed in (0, 1):  # as many random edges in the same layers
                    noise = float(rng.uniform(0, 0.04))
                    out["ablation"].append({"dataset": ds, "step": "random", "matched_step": step, "quarter": quarter,
                                            "layers": [quarter], "edges": 12, "accuracy": ceiling - noise,
                                            "baseline_accuracy": ceiling, "drop": noise, "seed": seed})
    return out


def icl_patching_rows(data: dict, positions: int = 6) -> tuple[pd.DataFrame, dict]:
    """``patching.parquet`` as ``interp icl`` writes it (``interp.circuits.icl_patching``) and its icl.json summary.

    Per dataset: ``blocks.*.attn.hook_z`` per head with every position patched at once (position −1) and
    ``hook_resid_pre`` per position (head −1) over the query and the tokens after it; a planted head
    (L1H2 for sentiment, L2H0 for topic) and the effect moving from the query to the last token.
    """
    from interp.circuits.icl_patching import COLUMNS, PATCH_SITES, QUERY_TOKEN

    rng = np.random.default_rng(3)
    n_layers = 1 + max(r["layer"] for r in data["summarize"])
    n_heads = 1 + max(r["head"] for r in data["heads"])
    start = 40  # the first position where the queries differ
    tokens = [QUERY_TOKEN] * (positions - 2) + ["\n", ":"]
    rows, summary = [], {}
    for ds, planted in (("sentiment", (1, 2)), ("topic", (min(2, n_layers - 1), 0))):
        for layer in range(n_layers):
            for head in range(n_heads):
                effect = 0.6 if (layer, head) == planted else float(rng.normal(0, 0.05))
                rows.append({"dataset": ds, "site": PATCH_SITES["z"].replace("*", str(layer)), "layer": layer, "head": head, "position": -1,
                             "token": "", "effect": effect, "metric": effect})
            for i, token in enumerate(tokens):
                late = layer / max(n_layers - 1, 1)
                effect = late if i == positions - 1 else (1 - late) * (0.8 if i == 1 else 0.1)
                rows.append({"dataset": ds, "site": PATCH_SITES["resid_pre"].replace("*", str(layer)), "layer": layer, "head": -1,
                             "position": start + i, "token": token, "effect": effect, "metric": effect})
        summary[ds] = {"pairs": 4, "tokens": start + positions, "first_query_position": start,
                       "clean_logit_diff": 1.25, "corrupted_logit_diff": -0.75,
                       "top_heads": [{"layer": planted[0], "head": planted[1], "effect": 0.6}]}
    return pd.DataFrame(rows)[COLUMNS], summary


def write_circuits(folder: Path, patching: bool = True, layout: str = "icl", **kwargs) -> Path:
    """``icl.json`` plus ``patching.parquet``.

    ``layout="icl"``: the file ``interp icl`` writes (see ``icl_patching_rows``); ``"positions"``:
    the bare schema the page also reads (``layer, head, position, site, effect``, no dataset), with
    per-head ``blocks.*.attn.hook_z`` at every position and whole-layer ``blocks.*.hook_resid_post``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = icl_data(**kwargs)
    if patching and layout == "icl":
        df, summary = icl_patching_rows(data)
        data["patching"] = {"file": "patching.parquet", "direction": "denoise", "datasets": summary}
        df.to_parquet(folder / "patching.parquet", index=False)
    elif patching:
        rng = np.random.default_rng(3)
        n_layers = 1 + max(r["layer"] for r in data["summarize"])
        n_heads = 1 + max(r["head"] for r in data["heads"])
        rows = [{"layer": layer, "head": head, "position": pos, "site": f"blocks.{layer}.attn.hook_z", "effect": float(rng.normal(0, 0.1))}
                for layer in range(n_layers) for head in range(n_heads) for pos in range(6)]
        rows += [{"layer": layer, "head": -1, "position": pos, "site": f"blocks.{layer}.hook_resid_post",
                  "effect": float(0.5 if (layer, pos) == (1, 5) else rng.normal(0, 0.05))}
                 for layer in range(n_layers) for pos in range(6)]
        pd.DataFrame(rows).to_parquet(folder / "patching.parquet", index=False)
    (folder / "icl.json").write_text(json.dumps(data, indent=1))
    return folder


def write_icl_run(folder: Path) -> Path:
    """A report written by the real ``interp icl`` pipeline on a tiny random Llama with a word-level tokenizer."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    from interp import Model
    from interp.circuits.icl import icl_circuit
    from interp.circuits.icl_data import DATASETS, load_dataset

    pre = pre_tokenizers.Split(Regex(r" ?\w+| ?[^\w\s]|\n"), behavior="isolated")
    vocab = {"<pad>": 0, "<unk>": 1}
    for name in DATASETS:
        ds = load_dataset(name)
        for text in [t for t, _ in ds.items] + [ds.input_prefix, ds.label_prefix] + [" " + lab for lab in ds.labels]:
            for piece, _ in pre.pre_tokenize_str(" " + text) + pre.pre_tokenize_str(text + "\n"):
                vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = Model(AutoModelForCausalLM.from_config(cfg, dtype=torch.float32), fast, name=TINY_NAME)
    result = icl_circuit(model, DATASETS, ks=[0, 1], k=1, n_queries=4, n_ablation=2, summarize=False,
                         patching_pairs=2, batch_size=4, progress=False)
    return result.save(folder)


def write_all(root: Path) -> Path:
    """Every kind of report under ``root`` (as ``interp app --reports root`` would find them)."""
    write_heads(root / "heads" / TINY_NAME)
    write_neurons(root / "neurons" / TINY_NAME)
    write_knob(root / "knob" / TINY_NAME)
    write_circuits(root / "circuits" / TINY_NAME)
    return root


# -- a tiny model folder with a real (word-level) tokenizer ------------------------------------------------
def _vocab_words() -> list[str]:
    from interp.app.views.heads import DEFAULT_PROMPT
    from interp.probes.knob_task import INTENTS, SYSTEM

    text = " ".join([SYSTEM, *INTENTS.values(), "Context: Instruction: Query: Answer:", DEFAULT_PROMPT,
                     *(v for it in KNOB_ITEMS for v in it.values()), "dog dogs cat the a saw ran red"])
    return list(dict.fromkeys(re.findall(r"\w+|[^\w\s]+", text)))


def write_tiny_model(folder: Path, vocab: int = 128) -> Path:
    """A random 3-layer Llama (GQA) with a word-level tokenizer, saved as a Hugging Face folder."""
    from tiny_models import build
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "[UNK]", *_vocab_words()]
    assert len(words) <= vocab, f"{len(words)} words do not fit the tiny vocabulary of {vocab}"
    words += [f"<fill{i}>" for i in range(vocab - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<pad>", unk_token="[UNK]")
    model = build("llama")
    model.config.pad_token_id = model.config.eos_token_id = 0
    model.generation_config.pad_token_id = model.generation_config.eos_token_id = 0
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
