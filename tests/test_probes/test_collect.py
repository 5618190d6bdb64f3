"""collect(): streaming to disk with ``out=``, reading the shards back, and the NaN check."""

from __future__ import annotations

import gc
import importlib

import numpy as np
import pytest
import torch
from tiny_models import NullTokenizer, build

from interp import Model
from interp.errors import InterpError
from interp.probes import Activations, collect, probe_by_site

# The module (interp.probes.collect is also the name of the function).
collect_module = importlib.import_module("interp.probes.collect")
SITES = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]


class NumberTokenizer(NullTokenizer):
    """Texts of space-separated token ids ("5 17 3"), left-padded with 0."""

    def __call__(self, texts, return_tensors=None, padding=False, add_special_tokens=True, **kwargs):
        if isinstance(texts, str):
            ids = [int(t) for t in texts.split()]
            return {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids}
        rows = [[int(t) for t in s.split()] for s in texts]
        width = max(map(len, rows))
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :], mask[i, width - len(r) :] = torch.tensor(r), 1
        return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def model():
    return Model(build("llama"), NumberTokenizer(), name="tiny-llama")


def texts_and_labels(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    texts = [" ".join(str(t) for t in rng.integers(1, 128, rng.integers(4, 11))) for _ in range(n)]
    return texts, [int(i % 2) for i in range(n)]


@pytest.mark.parametrize("position", ["last", "mean", 1, {"token": "7"}])
def test_streamed_shards_equal_the_in_memory_result(model, tmp_path, position):
    texts, labels = texts_and_labels(23)
    if isinstance(position, dict):
        texts = [t + " 7 3" for t in texts]
    mem = collect(model, texts, labels, sites=SITES, position=position, batch_size=5, progress=False)
    disk = collect(model, texts, labels, sites=SITES, position=position, batch_size=5, out=tmp_path, progress=False)
    again = Activations.load(tmp_path)
    assert len(list(tmp_path.glob("batch-*.safetensors"))) == 5  # ceil(23 / 5)
    for acts in (disk, again):
        assert acts.sites == SITES and acts.folder == tmp_path
        for s in SITES:
            assert acts.X[s].shape == (23, model.cfg.d_model)
            np.testing.assert_array_equal(acts.X[s], mem.X[s])
        np.testing.assert_array_equal(acts.labels, labels)
    np.testing.assert_array_equal(again.in_memory().X[SITES[1]], mem.X[SITES[1]])
    pd_mem, pd_disk = probe_by_site(mem, test_size=0.5), probe_by_site(again, test_size=0.5)
    np.testing.assert_array_equal(pd_mem["score"], pd_disk["score"])


def test_out_streams_and_holds_one_batch(model, tmp_path, monkeypatch):
    """With ``out=``, each shard is on disk before the next batch is serialised, and once a batch
    is written nothing but this spy refers to its arrays (the old code kept every batch in a
    list to join at the end), however many batches there are; the result reads the shards."""
    seen: list[list[np.ndarray]] = []  # the site arrays of each shard, in order
    real_save = collect_module.save_bytes

    def holders() -> list[str]:
        """Types of the objects besides ``seen`` that refer to a written batch's arrays (one gc scan)."""
        arrays = [a for batch in seen for a in batch]
        return [type(r).__name__ for r in gc.get_referrers(*arrays)
                if r is not arrays and not any(r is b for b in seen)] if arrays else []

    def save(shard):
        folder = out_folder[0]
        # Shards wait in the folder's staging area until the collection is complete.
        assert len(list(folder.glob("**/batch-*.safetensors"))) == len(seen), "shards must be written as batches complete"
        assert not holders(), f"a written batch is still held by {holders()}"
        seen.append([v for k, v in shard.items() if k != collect_module.LABELS])
        return real_save(shard)

    monkeypatch.setattr(collect_module, "save_bytes", save)
    out_folder: list = [None]
    for n in (4, 16):
        seen.clear()
        out_folder[0] = tmp_path / str(n)
        texts, labels = texts_and_labels(n, seed=n)
        acts = collect(model, texts, labels, sites=SITES, batch_size=2, out=out_folder[0], progress=False)
        assert len(seen) == n // 2 and all(len(arrays) == len(SITES) for arrays in seen)
        assert isinstance(acts.X, collect_module.ShardedSites)  # no arrays in the result
        assert not holders()
        np.testing.assert_array_equal(acts.X[SITES[1]], np.concatenate([arrays[1] for arrays in seen]))


def test_a_rerun_replaces_the_previous_collection(model, tmp_path):
    texts, labels = texts_and_labels(12)
    collect(model, texts, labels, sites=SITES[0], batch_size=2, out=tmp_path, progress=False)  # 6 shards
    acts = collect(model, texts[:5], labels[:5], sites=SITES[0], batch_size=4, out=tmp_path, progress=False)
    assert len(list(tmp_path.glob("batch-*.safetensors"))) == 2
    assert Activations.load(tmp_path).X[SITES[0]].shape == (5, model.cfg.d_model) == acts.X[SITES[0]].shape


def test_nan_activations_are_refused(model, tmp_path):
    """A NaN embedding for token 99 makes the residual of any text containing it NaN: collect
    names the site and the batch, and the shards it wrote before failing do not load."""
    hf = build("llama")
    with torch.no_grad():
        hf.model.embed_tokens.weight[99] = float("nan")
    bad = Model(hf, NumberTokenizer(), name="tiny-nan")
    texts, labels = texts_and_labels(6)
    texts = [t.replace("99", "98") for t in texts]
    clean = collect(bad, texts, labels, sites=SITES, batch_size=2, progress=False)
    assert all(np.isfinite(clean.X[s]).all() for s in SITES)
    texts[5] = "4 99 5 6"
    with pytest.raises(InterpError, match=r"activations at blocks\.0\.hook_resid_post contain NaN or inf "
                                          r"\(batch starting at example 4\)"):
        collect(bad, texts, labels, sites=SITES, batch_size=2, progress=False)
    with pytest.raises(InterpError, match="NaN or inf"):
        collect(bad, texts, labels, sites=SITES, batch_size=2, out=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # a failed collection lands nothing, not half a collection
    with pytest.raises(InterpError, match="no activations.json"):
        Activations.load(tmp_path)


def test_collect_bad_input(model, tmp_path):
    texts, labels = texts_and_labels(4)
    with pytest.raises(InterpError, match="4 texts but 3 labels"):
        collect(model, texts, labels[:3], sites=SITES, progress=False)
    with pytest.raises(InterpError, match="labels must be numbers"):
        collect(model, texts, ["a", "b", "a", "b"], sites=SITES, out=tmp_path, progress=False)
    with pytest.raises(InterpError, match="no activations"):
        Activations.load(tmp_path / "empty")
    with pytest.raises(InterpError, match="unknown position"):
        collect(model, texts, sites=SITES, position="first", progress=False)
    with pytest.raises(KeyError, match="not collected"):
        collect(model, texts, labels, sites=SITES[0], out=tmp_path, progress=False).X["blocks.1.hook_resid_post"]
