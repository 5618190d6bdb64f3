"""One site grammar: every entry point that takes sites reads the same names.

Full names, globs, TransformerLens short names (every layer) and ``(short name, layer)`` pairs
name the same sites in ``model.trace``, ``model.run_with_cache``, ``interventions=`` and
``circuits.activation_patching``; the head axis a site has (query or kv heads) is the same for
all of them.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import NullTokenizer, build

from interp import Model
from interp.circuits import activation_patching, logit_diff
from interp.core import interventions as iv
from interp.core.sites import head_axis
from interp.errors import OutOfRangeError, UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")

# short name (or pair), the same sites as a glob or a list of full names (tiny models: 3 layers)
SPELLINGS = [
    ("z", "blocks.*.attn.hook_z"),
    ("q", "blocks.*.attn.hook_q"),
    ("k", "blocks.*.attn.hook_k"),
    ("resid_post", "blocks.*.hook_resid_post"),
    ("post", "blocks.*.mlp.hook_post"),
    (("z", 1), ["blocks.1.attn.hook_z"]),
    ([("v", 2), "resid_pre"], ["blocks.2.attn.hook_v", *(f"blocks.{la}.hook_resid_pre" for la in range(3))]),
]


@pytest.fixture(scope="module")
def model():
    return Model(build("llama"), NullTokenizer(), name="tiny-llama")  # GQA: 4 query heads, 2 kv heads


@pytest.fixture(scope="module")
def pair():
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(1, 128, (1, 6), generator=g)
    corrupted = clean.clone()
    corrupted[0, 2] = (clean[0, 2] + 5) % 127 + 1
    return clean, corrupted


def _traced(model, ids, sites) -> set[str]:
    with model.trace(ids, sites=sites) as tr:
        pass
    return set(tr.keys())  # in the order the forward pass met them


@pytest.mark.parametrize(("short", "full"), SPELLINGS, ids=[str(s) for s, _ in SPELLINGS])
def test_trace_patching_and_resolve_name_the_same_sites(model, pair, short, full):
    clean, corrupted = pair
    names = [s.name for s in model.resolve(full)]
    assert [s.name for s in model.resolve(short)] == names and len(names) == len(set(names)) > 0
    assert _traced(model, clean, short) == _traced(model, clean, full) == set(names)
    _, cache = model.run_with_cache(clean, names_filter=short)
    assert set(cache.keys()) == set(names)
    patched = activation_patching(model, clean, corrupted, logit_diff(3, 7), sites=short, progress=False)
    assert list(dict.fromkeys(patched.df["site"])) == names
    again = activation_patching(model, clean, corrupted, logit_diff(3, 7), sites=full, progress=False)
    assert patched.df.equals(again.df)


def test_every_entry_point_has_the_same_head_axis(model, pair):
    """k/v are per kv head, q/z/result per query head: in the table, the captured shapes, the
    widths interventions are checked against and the rows of a patching table."""
    clean, corrupted = pair
    c = model.cfg
    assert c.n_kv_heads < c.n_heads
    sites = ["q", "k", "v", "z", "result", "resid_pre"]
    _, cache = model.run_with_cache(clean, names_filter=sites)
    patched = activation_patching(model, clean, corrupted, logit_diff(3, 7), sites=sites, progress=False)
    for name in cache.keys():
        axis = head_axis(name)
        want = {None: None, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads}[axis]
        assert model.site_dims(name)[0] == (axis or "d_model", want or c.d_model), name
        if want is None:
            assert cache[name].ndim == 3 and patched.df[patched.df["site"] == name]["head"].isna().all()
        else:
            assert cache[name].shape[2] == want, name
            assert sorted(patched.df[patched.df["site"] == name]["head"]) == list(range(want)), name


def test_short_names_work_as_intervention_and_reduce_keys(model, pair):
    clean, _ = pair
    short = model.run(clean, interventions={"z": iv.zero(heads=[1])})
    full = model.run(clean, interventions={"blocks.*.attn.hook_z": iv.zero(heads=[1])})
    one = model.run(clean, interventions={("z", 2): iv.zero(heads=[1])})
    assert torch.equal(short, full) and not torch.equal(short, one)
    assert not torch.equal(short, model.run(clean))
    with model.trace(clean, reduce={"resid_post": lambda x: x.norm()}) as tr:
        pass
    assert set(tr.keys()) == tr.reduced == {f"blocks.{la}.hook_resid_post" for la in range(3)}


def test_the_same_errors_everywhere(model, pair):
    clean, corrupted = pair
    for call in (lambda s: model.trace(clean, sites=s).__enter__(),
                 lambda s: activation_patching(model, clean, corrupted, logit_diff(3, 7), sites=s, progress=False)):
        with pytest.raises(UnknownNameError, match=r"unknown (patching )?site 'zz'.*blocks\.\*\.attn\.hook_z.*short names"):
            call("zz")
        with pytest.raises(OutOfRangeError, match=r"layer 5 is out of range: valid layers are 0..2"):
            call("blocks.5.attn.hook_z")
        with pytest.raises(UnknownNameError, match="unknown short site name 'pattern'"):
            call(("pattern", 1))
    assert not model.open_traces
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.hf.modules())
