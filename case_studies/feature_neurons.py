"""Feature neurons in SmolLM2: do neurons that decode to a concept fire on it, and steer towards it?

Davies (2025) on Llama-3.1-8B, redone on a 135M model. Per shipped concept set
(``interp/data/concepts.json``: " dog", " Paris", " three", " coffee", " red") and per weight
vector (``up``, the paper's choice; ``gate``; ``down``):

1. Decode: rank all 46,080 neurons with ``interp.neurons.find`` (default norm gains), keep 10.
2. Activation evidence for every neuron (``activation_scan``: max of ``hook_post`` over positions
   after the first), Cohen's d of 10 concept sentences against (a) their 10 matched controls
   (the concept swapped for another of its kind: dog -> cat, three -> five) and (b) the 40
   sentences of the other concept sets (other topics).
3. A neuron *agrees* when the concept is in its top 10 decoded tokens and d >= 0.8 ("large"),
   against matched controls (the criterion fixed first) or against other topics (added later).
4. Steering, on three neutral prompts: the top decode candidate and the first agreeing neurons
   are clamped (``hook_post``, every position) at ±1, 2, 5, 10, 20 times their largest activation
   on the concept prompts; the concept token's next-token probability with and without the clamp
   (goal: x10); greedy 20-token continuations at the smallest clamp reaching x10 on that prompt,
   else at the clamp with the best ratio. The sign the weights predict is the sign of the
   concept's logit in the neuron's down-column decode (what raising the neuron writes).

History, reported because it changed the protocol: the first run clamped at positive multiples
only and steered only agreeing neurons. Both neurons that agreed (L29N864 " Paris", L29N750
" coffee") then *lowered* p(concept) at every clamp (ratios 0.16 down to 5e-14) and the text
degenerated. Their down columns decode to minus the concept: they read "the concept is coming"
and push its logit down. Negative clamps and the down-column sign were added after that run; the
positive-clamp rows below are the first run's numbers.

Writes ``case_studies/results/feature_neurons.md`` and ``.json``.

    python case_studies/feature_neurons.py
    python case_studies/feature_neurons.py --smoke [--out DIR]   # one concept, last layer's `up` vectors, one clamp (CI)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

import interp
import interp.neurons as N
from interp.neurons.vectors import unembedding
from interp.results.folders import OutputFolder, output_folder
from interp.results.protocol import write_json

OUT = Path(__file__).parent / "results"
KIND = "feature_neurons"  # the report kind of the files this study writes (interp.results.folders)
WEIGHTS = ["up", "gate", "down"]
MULTIPLES = [1, 2, 5, 10, 20]
MAX_RANK, MIN_D, CANDIDATES = 10, 0.8, 10
FIND_LAYERS: list[int] | None = None  # layers whose neurons are decoded (None: all; --smoke: the last)


def table(df: pd.DataFrame) -> list[str]:
    """A pandas table as markdown lines (no tabulate dependency)."""
    def cell(v) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and pd.isna(v)):
            return "—"
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v).replace("|", "\\|").replace("\n", "\\n")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return lines


def records(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if v is pd.NA else v) for k, v in r.items()} for r in df.to_dict("records")]


class TokenZ:
    """z-score of one token's logit in the decode of any neuron vector (unembedding mean/covariance)."""

    def __init__(self, model):
        self.model, self.u = model, unembedding(model)
        self.mean, self.cov = self.u.mean(0), torch.cov(self.u.T, correction=0)

    def __call__(self, layer: int, neuron: int, weights: str, token: int) -> float:
        v = N.decoding_vectors(self.model, layer, weights)[neuron]
        return float((self.u[token] @ v - self.mean @ v) / (v @ self.cov @ v).sqrt())


def study_concept(model, name: str, spec: dict, others: list[str], zs: TokenZ) -> dict:
    word = " " + spec["words"][0]
    token = int(N.concept_tokens(model, word, on_split="error")["used_id"][0])
    matched = N.activation_scan(model, spec["prompts"], spec["controls"])
    matched["d_rank"] = range(1, len(matched) + 1)
    other = N.activation_scan(model, spec["prompts"], others).set_index(["layer", "neuron"])["cohens_d"]
    evidence = matched.set_index(["layer", "neuron"]).join(other.rename("d_other"))
    evidence = evidence.rename(columns={"cohens_d": "d_matched"})
    result: dict = {"concept": name, "token": word, "token_id": token, "weights": {}, "steer": {}}
    decode_ranks = {}
    for weights in WEIGHTS:
        ranked = N.find(model, word, weights=weights, top=None, layers=FIND_LAYERS, progress=False)
        decode_ranks[weights] = ranked.set_index(["layer", "neuron"])["rank_of_concept"]
        ranked = ranked.join(evidence[["d_matched", "d_rank", "d_other"]], on=["layer", "neuron"])
        cand = ranked.head(CANDIDATES).copy()
        cand["down_z"] = [zs(int(r.layer), int(r.neuron), "down", token) for r in cand.itertuples()]
        close = cand["rank_of_concept"].fillna(10**9) <= MAX_RANK
        cand["agrees"] = close & (cand["d_matched"] >= MIN_D)
        cand["agrees_other"] = close & (cand["d_other"] >= MIN_D)
        roles = {"top decode": cand.iloc[0]}
        for role, col in (("agrees (matched)", "agrees"), ("agrees (other topics)", "agrees_other")):
            if cand[col].any():
                roles[role] = cand[cand[col]].iloc[0]
        result["weights"][weights] = {
            "candidates": records(cand.drop(columns=["concept_prob", "top_prob"])),
            "roles": {role: f"L{int(r.layer)}N{int(r.neuron)}" for role, r in roles.items()},
        }
        print(f"{name} {weights}: " + ", ".join(f"{k} {v}" for k, v in result["weights"][weights]["roles"].items()),
              flush=True)
    strongest = evidence.sort_values("d_matched", ascending=False).head(5).reset_index()
    for weights in WEIGHTS:
        strongest[f"rank in {weights} decode"] = [decode_ranks[weights].get((r.layer, r.neuron)) for r in strongest.itertuples()]
    result["strongest_evidence"] = records(strongest[["layer", "neuron", "d_matched", "d_other"]
                                                     + [f"rank in {w} decode" for w in WEIGHTS]])
    return result


def steer_neuron(model, layer: int, neuron: int, spec: dict, token: int, neutral: list[str], down_z: float,
                 max_new_tokens: int) -> dict:
    ev = N.activation_evidence(model, layer, neuron, spec["prompts"], spec["controls"])
    a_max = max(ev.concept_values)
    scale = a_max if a_max > 0 else 1.0
    values = [sign * m * scale for sign in (1, -1) for m in MULTIPLES]
    rows, texts = [], []
    for prompt in neutral:
        base = N.concept_prob(model, prompt, [token])
        per = {v: N.concept_prob(model, prompt, [token], N.clamp(model, layer, neuron, v)) / base for v in values}
        rows += [{"prompt": prompt, "value": v, "p_base": base, "ratio": r} for v, r in per.items()]
        tenfold = sorted((v for v in values if per[v] >= 10), key=lambda v: (abs(v), -v))
        chosen = tenfold[0] if tenfold else max(values, key=per.__getitem__)
        word = model.tokenizer.decode([token])
        r = N.clamp_effect(model, layer, neuron, chosen, prompt, word, max_new_tokens)
        texts.append(r.as_dict())
    return {"layer": layer, "neuron": neuron, "evidence": ev.as_dict(), "a_max": a_max, "scale": scale,
            "down_z": down_z, "predicted_sign": 1 if down_z > 0 else -1, "probs": rows, "generations": texts}


def tenfold_clamps(probs: pd.DataFrame) -> list[float | None]:
    """Per prompt, the smallest clamp (by size) with ratio >= 10."""
    out = []
    for _, g in probs.groupby("prompt", sort=False):
        hits = sorted(g[g.ratio >= 10].value, key=lambda v: (abs(v), -v))
        out.append(hits[0] if hits else None)
    return out


def summarize(res: dict) -> list[dict]:
    roles: dict[tuple[str, str], list[str]] = {}
    for weights, e in res["weights"].items():
        for role, key in e["roles"].items():
            roles.setdefault((weights, key), []).append(role)
    rows = []
    for (weights, key), names in roles.items():
        c = next(c for c in res["weights"][weights]["candidates"] if f"L{c['layer']}N{c['neuron']}" == key)
        s = res["steer"][key]
        probs = pd.DataFrame(s["probs"])
        median = probs.groupby("value").ratio.median()
        tenfold = tenfold_clamps(probs)
        rows.append({
            "concept": repr(res["token"]), "weights": weights, "neuron": key, "role": ", ".join(names),
            "decode rank": c["rank_of_concept"], "d matched": c["d_matched"], "d other": c["d_other"],
            "down-column z": c["down_z"],
            "smallest x10 clamp per prompt": ", ".join("—" if v is None else f"{v:+.3g}" for v in tenfold),
            "best clamp (median ratio)": f"{median.idxmax():+.3g} (x{median.max():.3g})",
            "sign as predicted": "yes" if (median.idxmax() > 0) == (s["predicted_sign"] > 0) else "no",
        })
    return rows


def findings(results: list[dict]) -> list[str]:
    """Per concept: neurons whose decode and evidence agree, and whether a clamp reached x10."""
    lines = []
    for res in results:
        rows = pd.DataFrame(summarize(res))
        close = pd.to_numeric(rows["decode rank"], errors="coerce") <= MAX_RANK
        strict = rows[(rows.weights == "up") & close & (rows["d matched"] >= MIN_D)]
        loose = rows[close & ((rows["d matched"] >= MIN_D) | (rows["d other"] >= MIN_D))]
        steered = loose[loose["smallest x10 clamp per prompt"].str.contains(r"\d")]
        lines.append(
            f"- {res['token']!r}: criterion fixed first (`up` vectors, matched controls): "
            + (", ".join(sorted(set(strict.neuron))) or "no neuron")
            + "; any vector, matched or other-topic controls: " + (", ".join(sorted(set(loose.neuron))) or "none")
            + "; of these, reaching x10 on a neutral prompt: "
            + (", ".join(f"{r.neuron} ({r._9})" for r in steered.drop_duplicates("neuron").itertuples()) or "none")
        )
    return lines


# Written after reading the SmolLM2 run (the numbers above it are regenerated on every run).
NOTES = {
    "smollm2-135m": """\
- The paper's vector (`up`) rarely names the concept in this 135M model: only " three" (several
  rank-1 neurons), " coffee" (L29N750) and " red" (L1N969) have rank-1 `up` neurons; " dog" is at
  best rank 5 and " Paris" rank 12. `gate` rows and `down` columns name concepts more often
  (L29N808: ' dog', ' cat', 'dog', ' Dogs' in its gate row; 'dog', ' Dogs' in its down column).
- Decoded neurons are mostly category neurons. Of the 150 top-10 decode candidates, only L29N864
  (" Paris", d 1.09) and L29N750 (" coffee", d 0.86) fire more on the concept than on matched
  controls (dog -> cat, three -> five) with d >= 0.8; against other topics more do (L29N808
  " dog" d 1.29, L21N1098 " three" d 1.25). L0N350's up row decodes to ' cat', 'cat', ' Cat', ...
  (' dog' 6th); it fires on dog sentences far more than on other topics (d 7.86) but barely more
  than on cat or horse sentences (0.53): with tied embeddings an early neuron's decode names the
  input tokens it reads.
- The strongest matched-control evidence sits mostly in layers 0-5 (token-identity neurons; also
  L14-15 for " three", L21 for " red"), and those neurons' vectors do not decode to the concept
  (outside the top 50 of all three decodes, but for two at ranks 20 and 34).
- The clamp direction is given by the down column, not the up row. L29N864 (" Paris") and
  L29N750 (" coffee") read the concept and write its negative (down-column z -9.6 and -5.5):
  suppression neurons of the last layer. Clamping them high, as the first run did, lowers
  p(concept) up to 1e13-fold and degrades the text; clamping them negative raises it 10-1000x.
  For 17 of the 19 steered neurons the down-column sign predicted the better clamp direction (the
  two misses, L5N1328 and L26N1040, move p by less than x2.5 either way).
- Steering shows in probability long before it shows in greedy text. Of the 57 continuations
  generated at the smallest clamp reaching x10 (or the best clamp), 3 bring in the concept, all
  after "Yesterday afternoon, I went out and bought a": "dog dog dog ..." (L29N808 at +27.4,
  degenerate), " coffee with a coffee drink. I was going to buy coffee with coffee" (L29N750 at
  -25) and " coffee drink. I drank coffee drinks. ..." (L29N186 at +47.4). Elsewhere the text
  stays on its old track or drifts ("world of magic", "world of 3D"). Davies' "always names
  dogs" behaviour was not reproduced at a clamp that keeps the text fluent.
""",
}


def report(results: list[dict], model_name: str, seconds: float) -> str:
    lines = [f"# Feature neurons in {model_name}", "",
             "Produced by `python case_studies/feature_neurons.py`; the protocol, and how it changed after a first "
             "run, is in the script's docstring. Decoding uses the input-norm and final-norm gains (the defaults); "
             f"*agree*: concept token in the neuron's top {MAX_RANK} decoded tokens and Cohen's d >= {MIN_D}. "
             f"Clamps at ±{', '.join(map(str, MULTIPLES))} x the neuron's largest activation on the concept prompts. "
             f"Run time {seconds / 60:.1f} min on 2 CPU cores.", "", "## Findings", ""]
    lines += findings(results) + [""]
    if model_name in NOTES:
        lines += ["Notes:", "", NOTES[model_name]]
    lines += ["## Summary", ""]
    lines += table(pd.DataFrame([row for res in results for row in summarize(res)])) + [""]
    for res in results:
        lines += [f"## {res['token']!r} ({res['concept']})", "",
                  "Strongest activation evidence (matched controls, all neurons) and where they rank in each decode:", ""]
        lines += table(pd.DataFrame(res["strongest_evidence"])) + [""]
        for weights, e in res["weights"].items():
            lines += [f"### `{weights}` vectors: top {CANDIDATES} by decode", ""]
            cand = pd.DataFrame(e["candidates"])[["layer", "neuron", "rank_of_concept", "concept_z", "d_matched",
                                                  "d_rank", "d_other", "down_z", "top_tokens"]]
            lines += table(cand) + [""]
        for key, s in res["steer"].items():
            ev = s["evidence"]
            lines += [f"### Clamping {key}", "",
                      f"Max activation over positions, concept prompts {ev['concept_mean']:.3g} (mean) vs matched "
                      f"controls {ev['control_mean']:.3g}, d = {ev['cohens_d']:.2f}; clamp unit = largest concept "
                      f"activation {s['a_max']:.3g}; down-column z of the concept {s['down_z']:.2f} (predicts "
                      f"{'raising' if s['predicted_sign'] > 0 else 'lowering'} the neuron raises it).", "",
                      f"Ratio p(clamped) / p(base) of {res['token']!r}:", ""]
            probs = pd.DataFrame(s["probs"])
            wide = probs.pivot(index="prompt", columns="value", values="ratio")
            wide = wide[sorted(wide.columns, key=lambda v: (v < 0, abs(v)))]
            wide.columns = [f"{v:+.3g}" for v in wide.columns]
            wide.insert(0, "p base", probs.groupby("prompt").p_base.first())
            lines += table(wide.reset_index()) + [""]
            for g in s["generations"]:
                lines += [f"- {g['prompt']!r}, clamp {g['value']:+.3g}: p {g['p_base']:.3g} -> {g['p_clamped']:.3g} "
                          f"(x{g['ratio']:.3g})", f"  - without: {g['text_base']!r}", f"  - with: {g['text_clamped']!r}"]
            lines += [""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    global WEIGHTS, MULTIPLES
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--concepts", default=",".join(N.load_concepts()))
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--render", action="store_true", help="rewrite the .md from the saved .json only")
    parser.add_argument("--smoke", action="store_true",
                        help="one concept, the last layer's `up` vectors, one clamp size, one neutral prompt, two "
                             "generated tokens, into --out (CI)")
    parser.add_argument("--out", type=Path, help="with --smoke: the results folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    out = OUT
    if args.smoke:
        out = args.out or Path(tempfile.mkdtemp(prefix="feature_neurons-"))
        args.concepts, args.max_new_tokens = next(iter(N.load_concepts())), 2
        WEIGHTS, MULTIPLES = ["up"], [5]
    with output_folder(out, kind=KIND) as dest:  # checked and locked before the model loads
        if args.render:
            dest.keep("feature_neurons.json")
            saved = json.loads((out / "feature_neurons.json").read_text())
            text = report(saved["results"], saved["model"], saved["seconds"])
            dest.write_text("feature_neurons.md", text)
            return print(text)
        study(args, dest)


def study(args, out: OutputFolder) -> None:
    global FIND_LAYERS
    start = time.perf_counter()
    model = interp.load(args.model)
    sets, neutral, zs = N.load_concepts(), N.neutral_prompts(), TokenZ(model)
    if args.smoke:  # decode the last layer's neurons only, steer on one neutral prompt
        FIND_LAYERS, neutral = [model.cfg.n_layers - 1], neutral[:1]
    results = []
    for name in args.concepts.split(","):
        others = [p for other, s in sets.items() if other != name for p in s["prompts"]]
        res = study_concept(model, name, sets[name], others, zs)
        for e in res["weights"].values():
            for key in e["roles"].values():
                if key not in res["steer"]:
                    c = next(c for c in e["candidates"] if f"L{c['layer']}N{c['neuron']}" == key)
                    res["steer"][key] = steer_neuron(model, int(c["layer"]), int(c["neuron"]), sets[name],
                                                     res["token_id"], neutral, c["down_z"], args.max_new_tokens)
        results.append(res)
    seconds = time.perf_counter() - start
    text = report(results, model.name, seconds)
    out.write_text("feature_neurons.md", text)
    write_json(out, "feature_neurons.json", {"model": model.name, "seconds": seconds, "results": results}, end="",
               default=str)
    print(text)


if __name__ == "__main__":
    main()
