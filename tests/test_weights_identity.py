"""One weights identity (`Prior.weights_sha256`): the sha256 of the weights files, for every prior, and
torch's global random stream left as it was by whatever seeds it."""

import hashlib
import json
import os

import numpy as np
import pytest
import torch

from specdifftree.files import combined_sha256, file_sha256, files_sha256, model_files
from specdifftree.prior.builtin import BUILTIN_PROBLEMS
from specdifftree.prior.markov import MarkovPrior


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_is_hashed_once_while_unchanged_and_again_when_it_changes(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 3_000_000)
    assert file_sha256(f) == sha(f) == file_sha256(str(f))
    f.write_bytes(b"b" * 3_000_000)
    os.utime(f, ns=(1, 1))  # a changed modification time: hashed again
    assert file_sha256(f) == sha(f)
    g = tmp_path / "x.bin"
    g.write_bytes(b"c")
    assert files_sha256([f]) == sha(f) and files_sha256([]) == ""
    lines = f"{sha(f)}  w.bin\n{sha(g)}  x.bin\n"  # sha256sum's lines, sorted by name
    assert files_sha256([g, f]) == hashlib.sha256(lines.encode()).hexdigest() == combined_sha256(
        {"x.bin": sha(g), "w.bin": sha(f)})


def test_model_files_are_the_safetensors_else_the_bin_files(tmp_path):
    assert model_files(tmp_path) == [] and model_files(tmp_path / "nowhere") == []
    (tmp_path / "pytorch_model.bin").write_bytes(b"1")
    assert model_files(tmp_path) == [tmp_path / "pytorch_model.bin"]
    for name in ("model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors"):
        (tmp_path / name).write_bytes(b"2")
    assert [p.name for p in model_files(tmp_path)] == ["model-00001-of-00002.safetensors",
                                                       "model-00002-of-00002.safetensors"]


def test_a_markov_prior_is_named_by_its_file_or_its_canonical_json(tmp_path):
    toy3 = BUILTIN_PROBLEMS["toy3"]().prior
    canonical = json.dumps(toy3.to_dict(), sort_keys=True).encode()
    assert toy3.weights_sha256() == hashlib.sha256(canonical).hexdigest() == toy3.metered().weights_sha256()
    f = tmp_path / "chain.json"
    f.write_text(json.dumps(toy3.to_dict(), indent=2))
    loaded = MarkovPrior.from_json(f)
    assert loaded.weights_sha256() == sha(f) == loaded.metered().weights_sha256()


def test_trained_parts_are_named_by_the_weights_file_they_save_as(tmp_path):
    from specdifftree.prior.model import PriorParts

    fresh = PriorParts.fresh(258, "default")
    fresh.save(tmp_path / "parts")
    weights = tmp_path / "parts" / "weights.safetensors"
    assert fresh.weights_sha256() == sha(weights) == PriorParts.load(tmp_path / "parts").weights_sha256()
    assert PriorParts.fresh(258, "default", seed=1).weights_sha256() != sha(weights)


def test_a_transformers_backbone_is_named_by_its_files_or_all_its_values(tiny_llama_dir, tiny_llama):
    from specdifftree.prior.backbones.hf import HFBackbone
    from specdifftree.prior.tokenizer import build_hf_tokenizer

    from specdifftree.experiments.provenance import provenance

    path = tiny_llama_dir()
    assert HFBackbone.from_pretrained(str(path)).weights_sha256() == sha(path / "model.safetensors")
    assert provenance(f"hf:{path}")["backbone_sha256"] == sha(path / "model.safetensors")  # records name it alike
    model = tiny_llama()
    before = HFBackbone(model, build_hf_tokenizer()).weights_sha256()
    with torch.no_grad():  # one value in the middle of a tensor: the first and last values stay
        w = model.model.layers[0].mlp.up_proj.weight
        w.view(-1)[w.numel() // 2] += 1.0
    assert HFBackbone(model, build_hf_tokenizer()).weights_sha256() != before


def test_a_tslm_prior_is_named_by_its_backbone_and_its_trained_parts(tiny_hf):
    from specdifftree.data.context import Context
    from specdifftree.data.prompts import forecast_codec
    from specdifftree.prior.sources import open_prior

    x = np.sin(np.arange(32.0))
    context = Context(series=x, horizon=4, codec=forecast_codec(x))
    source = open_prior(f"hf:{tiny_hf}")
    prior = source.prior_for(context)
    assert prior.weights_sha256() == combined_sha256({"backbone": sha(tiny_hf / "model.safetensors"),
                                                      "prior": source.parts.weights_sha256()})


def test_seeding_leaves_torchs_random_stream_as_it_was():
    from specdifftree.machine import seeded
    from specdifftree.prior.model import PriorParts

    torch.manual_seed(123)
    before = torch.get_rng_state()
    with seeded(5):
        inside = torch.rand(3)
    a = PriorParts.fresh(10, "default", seed=2)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), inside)  # the same stream as torch.manual_seed(seed) gives
    assert a.weights_sha256() == PriorParts.fresh(10, "default", seed=2).weights_sha256()
