"""The embedded default backbone: corpus, pretraining (tiny preset), cache and loading."""

import dataclasses
import hashlib
import json
import re
import shutil
import threading
import time

import numpy as np
import pytest

from specdifftree.data import corpus
from specdifftree.data.corpus import CorpusMix, generate_corpus
from specdifftree.errors import SDTError
from specdifftree.prior import default as bb
from specdifftree.prior.default import default_backbone, load_hf_dir
from specdifftree.prior.tokenizer import EOS_ID, EOS_TOKEN, PAD_ID
from specdifftree.train import backbone as build
from specdifftree.train.backbone import encode_document, ensure_backbone, pretrain_backbone
from specdifftree.train.config import BackbonePreset


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    """The tiny preset built once: (directory, build seconds)."""
    out = tmp_path_factory.mktemp("bb") / "tiny"
    start = time.time()
    pretrain_backbone(out, "tiny", seed=0, progress=False)
    return out, time.time() - start


def test_tiny_builds_fast_into_a_standard_directory(tiny_build):
    path, seconds = tiny_build
    assert seconds < 60
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "sdt_backbone.json"):
        assert (path / name).is_file(), name
    assert not list(path.parent.glob("tiny.tmp-*"))  # nothing half-written left behind


def test_loads_with_auto_classes(tiny_build):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, _ = tiny_build
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.vocab_size == len(tok) == 258
    assert model.config.tie_word_embeddings is False
    ids = tok("12,-3")["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), 258)


def test_digits_are_single_tokens(tiny_build):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_build[0])
    for ch in "0123456789,-. ":
        assert tok(ch)["input_ids"] == [ord(ch)]
    assert tok("123,-45")["input_ids"] == list(b"123,-45")  # no BOS, no merges
    assert (tok.eos_token_id, tok.pad_token_id) == (EOS_ID, PAD_ID) == (256, 257)


def test_loss_decreased(tiny_build):
    record = json.loads((tiny_build[0] / "sdt_backbone.json").read_text())
    assert record["final_loss"] < record["initial_loss"] - 1.0
    assert record["final_loss"] < record["uniform_loss"]
    assert record["preset"]["name"] == "tiny" and record["seed"] == 0


def test_same_seed_gives_bit_identical_weights(tiny_build, tmp_path):
    again = pretrain_backbone(tmp_path / "again", "tiny", seed=0, progress=False)
    assert (again / "model.safetensors").read_bytes() == (tiny_build[0] / "model.safetensors").read_bytes()


def test_device_is_recorded_and_checked(tiny_build, monkeypatch, tmp_path, run_cli):
    """The CPU is the default device (the command records none); 'auto' on a machine without CUDA is the
    CPU, bit for bit; an unknown or absent device is a clear error before any training."""
    import torch

    from specdifftree.train.backbone import _train

    record = json.loads((tiny_build[0] / "sdt_backbone.json").read_text())
    assert record["device"] == "cpu" and "--device" not in record["command"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    preset = dataclasses.replace(BackbonePreset.from_name("tiny"), steps=2)
    cpu, auto = (_train(preset, 0, 2, False, device)[0].state_dict() for device in ("cpu", "auto"))
    assert all(torch.equal(cpu[k], auto[k]) for k in cpu)
    with pytest.raises(SDTError, match="sees no CUDA device"):
        _train(preset, 0, 2, False, "cuda")
    code, _, err = run_cli(["pretrain-backbone", "--out", tmp_path / "bb", "--preset", "tiny", "--device", "gpu"])
    assert code == 2 and "error: --device must be one of" in err
    assert not (tmp_path / "bb").exists()


def test_backbone_preset_inits_form_chains_that_end_in_weights():
    """Every preset's `init` names a committed backbone or another preset, without a cycle; the
    default's names the committed weights it was trained on from."""
    from specdifftree.config import preset_names

    names = preset_names("backbone")
    for name in names:
        seen = [name]
        while init := BackbonePreset.from_name(seen[-1]).init:
            if (bb.PACKAGED / init).is_dir():
                break
            assert init in names, f"{seen[-1]}: init '{init}' names no committed backbone and no preset"
            assert init not in seen, f"cycle: {seen + [init]}"
            seen.append(init)
    assert (bb.PACKAGED / BackbonePreset.from_name("default").init / "model.safetensors").is_file()


def test_corpus_is_deterministic_and_documents_end_with_eos():
    docs = generate_corpus(40, seed=0)
    assert docs == generate_corpus(40, seed=0)
    assert docs != generate_corpus(40, seed=1)
    for d in docs:
        assert d.endswith(EOS_TOKEN) and d.count(EOS_TOKEN) == 1 and d.isascii()
        ids = encode_document(d)
        assert ids[-1] == EOS_ID and len(ids) <= 1536


def test_corpus_token_ids_match_the_tokenizer():
    from specdifftree.prior.tokenizer import build_hf_tokenizer

    tok = build_hf_tokenizer()
    for d in generate_corpus(5, seed=3):
        assert tok(d)["input_ids"] == encode_document(d)


def test_forecast_text_keeps_a_lag_at_one_token_offset_across_the_history_end():
    """The answer continues the history's list: in prompt + answer, value t and value t - 24 are
    always 4 * 24 tokens apart (three digits and a comma each), also when t is in the answer and
    t - 24 in the history, so copying yesterday is one relative offset everywhere."""
    from specdifftree.data.prompts import forecast_answer, forecast_codec, forecast_prompt

    t = np.arange(120)
    x = 10 + 3 * np.sin(2 * np.pi * t / 24) + 0.01 * t
    history, future = x[:96], x[96:]
    codec = forecast_codec(history)
    ids = encode_document(forecast_prompt(history, 24, codec) + forecast_answer(future, codec) + EOS_TOKEN)
    start = len(encode_document(forecast_prompt(history, 24, codec) + EOS_TOKEN)) - 1 - 4 * 96
    values = [ids[start + 4 * i: start + 4 * i + 3] for i in range(120)]
    text = bytes(ids[start:-1]).decode()
    assert text == codec.encode(history) + "," + codec.encode(future)
    assert all(bytes(v).decode().isdigit() for v in values)  # value i starts 4 * i tokens after value 0


def test_corpus_mix_is_mostly_forecasting():
    docs = generate_corpus(300, seed=0, data=None, max_tokens=512)
    forecast = sum(" values continue the list. Values: " in d for d in docs)
    captions = sum("\nCaption: " in d for d in docs)
    qa = sum("\nQuestion: " in d and " Answer: " in d for d in docs)
    assert forecast + captions + qa == len(docs)
    assert forecast > 0.65 * len(docs) and captions > 0 and qa > 0
    assert all(len(encode_document(d)) <= 512 for d in docs)


def test_real_data_reads_only_the_first_60_percent():
    root = corpus.data_dir()
    if root is None or not (root / "ett" / "ETTh1.csv").is_file():
        pytest.skip("shared/data is not present")
    series = dict(corpus.real_series(root))
    assert len(series["ETTh1:OT"]) == int(17420 * 0.6)
    assert series["ETTh1:OT"][0] == pytest.approx(30.5310001373291)
    assert any(name.startswith("M4:") for name in series)


def test_load_hf_dir(tiny_build):
    model, tok = load_hf_dir(tiny_build[0])
    assert not model.training
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in model.parameters())
    assert tok.eos_token_id == EOS_ID


def test_load_hf_dir_rejects_bad_directories(tmp_path):
    with pytest.raises(SDTError, match="not a directory"):
        load_hf_dir(tmp_path / "nope")
    with pytest.raises(SDTError, match=r"missing config\.json, model\.safetensors, tokenizer\.json") as e:
        load_hf_dir(tmp_path)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(SDTError, match="pickled weights are not loaded"):
        load_hf_dir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(SDTError, match="cannot load the model"):
        load_hf_dir(tmp_path)


def test_presets():
    assert BackbonePreset.from_name("default").hidden_size == 128
    assert BackbonePreset.from_name("tiny").hidden_size == 32
    with pytest.raises(SDTError, match="unknown backbone preset"):
        BackbonePreset.from_name("huge")
    # the size ablations (S-ADT.md, "A larger backbone"): the from-scratch recipe, only the shape changed
    base = dataclasses.asdict(BackbonePreset())
    shape = {"hidden_size", "num_layers", "num_heads", "intermediate_size", "minutes", "name"}
    for name, changed in (("deep8", {"num_layers": 8}), ("wide192", {"hidden_size": 192, "num_heads": 6})):
        preset = dataclasses.asdict(BackbonePreset.from_name(name))
        assert {k: v for k, v in preset.items() if k not in shape} == {k: v for k, v in base.items() if k not in shape}
        assert all(preset[k] == v for k, v in changed.items()) and preset["num_heads"] * preset["head_dim"] == preset["hidden_size"]


def test_preset_corpus_options_change_the_documents_only_when_set():
    base = generate_corpus(60, seed=0, data=None)
    assert generate_corpus(60, seed=0, data=None, mix=CorpusMix(periodic_share=0.0)) == base
    long = generate_corpus(60, seed=0, data=None, mix=CorpusMix(history=(200, 256), horizon=(16, 16),
                                                                periodic_share=0.5))
    forecasts = [d for d in long if " values continue the list. " in d]
    assert forecasts and all("The next 16 values continue" in d for d in forecasts)
    assert all(int(d.split(" points")[0].rsplit(" ", 1)[1]) >= 140 for d in forecasts)  # 200+, or shortened to fit
    with pytest.raises(SDTError, match="history must be"):
        BackbonePreset(history=(50, 20))


def test_ett_share_draws_real_windows_from_the_ett_columns():
    from specdifftree.data.corpus import _window

    real = [("ETTh1:OT", np.arange(500.0)), ("M4:H1", 10_000 + np.arange(500.0)), ("M4:H2", 20_000 + np.arange(500.0))]

    def sources(ett_share):
        rng = np.random.default_rng(0)
        return [int(_window(rng, real, 16, real_share=1.0, ett_share=ett_share)[0] // 10_000) for _ in range(300)]
    assert set(sources(1.0)) == {0} and set(sources(1e-9)) == {1, 2}  # 0: ETT, 1-2: the M4 rows
    share = np.mean(np.array(sources(0.8)) == 0)
    assert 0.7 < share < 0.9  # drawn uniformly over the series it would be 1/3 of the time
    a, b = np.random.default_rng(1), np.random.default_rng(1)  # at 0 no draw: older corpora unchanged
    assert all(np.array_equal(_window(a, real, 16), _window(b, real, 16, ett_share=0.0)) for _ in range(50))


def test_init_starts_from_a_committed_backbone():
    """A preset's `init` copies a committed backbone's weights before the first step; a name that is
    not committed, or another architecture, is a clear error."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from specdifftree.train.backbone import _train

    path = bb.packaged_backbone()
    layers = json.loads((path / "config.json").read_text())["num_hidden_layers"]
    model, _ = _train(BackbonePreset(init=path.name, num_layers=layers), seed=0, steps=0, progress=False)
    want = load_file(path / "model.safetensors")
    assert all(np.array_equal(w.numpy(), want[k].numpy()) for k, w in model.state_dict().items())
    with pytest.raises(SDTError, match="names no committed backbone .* and no backbone preset"):
        _train(BackbonePreset(init="nope"), seed=0, steps=0, progress=False)
    with pytest.raises(SDTError, match="another architecture"):
        _train(replace(BackbonePreset.from_name("tiny"), init=path.name), seed=0, steps=0, progress=False)


def test_init_names_a_preset_that_is_built_first_and_deepened(tiny_build, tmp_path, monkeypatch):
    """`init` naming an uncommitted preset builds that preset first (cached under SDT_HOME, the same
    bits as building it alone), records its sha256, and a deeper preset starts from its expansion."""
    import yaml

    from specdifftree import config

    configs = tmp_path / "configs"
    (configs / "backbone").mkdir(parents=True)
    shutil.copy(config.preset_path("backbone", "tiny"), configs / "backbone" / "tiny.yaml")
    tiny = yaml.safe_load(open(configs / "backbone" / "tiny.yaml"))
    (configs / "backbone" / "tiny4.yaml").write_text(yaml.safe_dump({**tiny, "num_layers": 4, "init": "tiny",
                                                                      "steps": 2, "warmup": 1}))
    monkeypatch.setattr(config, "configs_dir", lambda: configs)
    monkeypatch.setenv("SDT_HOME", str(tmp_path / "home"))
    out = pretrain_backbone(tmp_path / "tiny4", "tiny4", progress=False)
    built = tmp_path / "home" / "backbones" / "tiny-v1" / "model.safetensors"
    assert built.read_bytes() == (tiny_build[0] / "model.safetensors").read_bytes()  # seed 0 both
    record = json.loads((out / "sdt_backbone.json").read_text())
    assert record["corpus"]["init"] == "tiny"
    assert record["corpus"]["init_sha256"] == hashlib.sha256(built.read_bytes()).hexdigest()
    model, _ = load_hf_dir(out)
    assert model.config.num_hidden_layers == 4


@pytest.mark.parametrize("deeper", [3, 4])
def test_expand_layers_keeps_the_function(deeper):
    """Block expansion: the deeper model computes the same logits (new layers' output projections
    are zero), its new layers are copies, and a depth that does not split the old layers evenly is
    refused."""
    import torch
    from dataclasses import replace

    from transformers import LlamaForCausalLM

    from specdifftree.train.backbone import expand_layers

    p = BackbonePreset.from_name("tiny")  # 2 layers
    torch.manual_seed(0)
    small = LlamaForCausalLM(p.llama_config()).eval()
    for w in small.parameters():  # make every weight matter (norms are ones at init)
        w.data.normal_(0, 0.2)
    state = expand_layers(small.state_dict(), deeper)
    big = LlamaForCausalLM(replace(p, num_layers=deeper).llama_config()).eval()
    big.load_state_dict(state, strict=True)
    ids = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        assert torch.allclose(small(ids).logits, big(ids).logits, atol=1e-5)
    last = f"model.layers.{deeper - 1}."
    assert torch.equal(state[last + "mlp.up_proj.weight"], small.state_dict()["model.layers.1.mlp.up_proj.weight"])
    assert not state[last + "mlp.down_proj.weight"].any() and not state[last + "self_attn.o_proj.weight"].any()
    assert small.state_dict()["model.layers.1.mlp.down_proj.weight"].any()  # the input is not modified
    with pytest.raises(SDTError, match="equal groups"):
        expand_layers(small.state_dict(), 5)  # 2 layers cannot be split into 3 groups


def test_ensure_builds_once_under_a_lock(tiny_build, tmp_path, monkeypatch, capfd):
    """Two concurrent callers: one build, the other waits; later calls reuse the cache."""
    monkeypatch.setenv("SDT_HOME", str(tmp_path))
    calls = []

    def fake_build(out_dir, preset, seed=None, progress=True):  # a copy of the fixture, slowly
        calls.append(preset.name)
        time.sleep(0.5)
        tmp = out_dir.with_name(out_dir.name + ".tmp-fake")
        shutil.copytree(tiny_build[0], tmp)
        tmp.rename(out_dir)
        return out_dir

    monkeypatch.setattr(build, "pretrain_backbone", fake_build)
    monkeypatch.setattr(bb, "PACKAGED", tmp_path / "not-installed")  # as if the install left it out
    name = bb.DEFAULT_BACKBONE
    stale = tmp_path / "backbones" / f"{name}.tmp-99999"
    stale.mkdir(parents=True)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_backbone(progress=False)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["default"]
    assert results == [tmp_path / "backbones" / name] * 2
    assert not stale.exists()
    assert "building the default backbone (first use, about" in capfd.readouterr().err
    assert ensure_backbone() == default_backbone() == results[0] and calls == ["default"]
    load_hf_dir(results[0])


def test_captions_preset_corpus_has_hierarchical_captions_and_default_keeps_the_sentence():
    from specdifftree.data.captions import ASK, UNLABELLED_VARIANTS
    assert BackbonePreset.from_name("default").captions == "sentence"
    assert BackbonePreset.from_name("captions").captions == "hierarchical"
    plain = generate_corpus(150, seed=0, data=None)
    rich = generate_corpus(150, seed=0, data=None, mix=CorpusMix(captions="hierarchical"))
    assert all("; it ranges from " in d for d in plain if "\nCaption: " in d)
    caps = [d for d in rich if "\nCaption: " in d]
    assert caps and all(any(ASK[v] in d for v in UNLABELLED_VARIANTS) for d in caps)
    assert not any("; it ranges from " in d for d in caps)


# --------------------------------------------------------------------------- the packaged backbone


def test_the_packaged_backbone_is_the_default_and_records_its_build():
    from specdifftree.machine import cpu_name, fingerprint

    path = bb.packaged_backbone()
    assert path is not None and path.name == bb.DEFAULT_BACKBONE and default_backbone() == path
    assert sum(f.stat().st_size for f in path.iterdir()) <= 25 * 2**20
    record = json.loads((path / "sdt_backbone.json").read_text())
    seed = BackbonePreset.from_name("default").seed
    assert record["command"] == f"sdt pretrain-backbone --preset default --seed {seed} --out DIR"
    # fields added since the build default to what the build did
    assert BackbonePreset(**record["preset"]) == BackbonePreset.from_name("default") and record["seed"] == seed
    init = bb.PACKAGED / record["preset"]["init"] / "model.safetensors"  # what it trained on from, shipped too
    assert record["corpus"]["init_sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()
    assert record["prefix"]["steps"] == build.PREFIX_STEPS and record["cpu"] and record["torch"]
    assert record["corpus"]["real_series"] > 0  # built with shared/data present
    model, _ = load_hf_dir(path)
    assert model.config.num_hidden_layers == record["preset"]["num_layers"]
    assert fingerprint().startswith(cpu_name() + "; numpy ")  # what the prefix check below compares


def test_training_threads_is_scoped_and_the_fingerprint_names_the_simd_levels():
    import torch

    from specdifftree.machine import fingerprint, training_threads

    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with training_threads(1):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    assert f"; torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}" in fingerprint()
    assert fingerprint() == fingerprint()


# every committed build and the preset that rebuilds it: the default and the chain it starts from
COMMITTED = {"default": bb.DEFAULT_BACKBONE, "default-v6": "default-v6", "default-v5": "default-v5",
             "scratch4": "default-v5-base"}


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(COMMITTED))
def test_rebuilding_the_packaged_backbone_starts_bit_for_bit_as_recorded(preset):
    """`sdt pretrain-backbone --preset default` rebuilds the packaged weights (and `--preset
    default-v6`, `default-v5`, `scratch4` the weights they start from, in turn): its first steps, on
    the same data, give the recorded hashes of the token ids trained on and of the weights.

    Bit for bit on a machine that computes as the builder did: the same `machine.fingerprint()`
    (CPU, numpy's and torch's SIMD levels, versions), which builds record as "machine". Two CPUs of
    one name can differ there (the committed builds record only the name, "AMD EPYC", which an
    AVX2 machine shares with an AVX-512 one), so a record without the fingerprint, or with another,
    is checked as from another machine: floats differ in their last bits, so the losses of those
    steps must agree to 1e-4 relative on the same token ids. The token ids themselves differ only
    where the corpus printed the roundoff of a centred series' mean ("mean -5.568e-14", digits the
    SIMD path decides; test_sources.py::test_default_corpus_unchanged): then those steps' documents
    must hold such a number, and the losses agree to 1e-3."""
    from specdifftree.machine import fingerprint

    path = bb.PACKAGED / COMMITTED[preset]
    record = json.loads((path / "sdt_backbone.json").read_text())
    # built as the preset is now (default-v5 and v6 were built as `--preset default`, when each was the default)
    p = BackbonePreset.from_name(preset)
    assert BackbonePreset(**{**record["preset"], "name": preset}) == p
    if corpus.real_series(corpus.data_dir()) == () or record["corpus"]["real_series"] != len(corpus.real_series(corpus.data_dir())):
        pytest.fail("shared/data must be present as it was for the build (see sdt_backbone.json, corpus)")
    got = build.prefix_record(preset, seed=record["seed"])
    want = record["prefix"]
    if record.get("machine") == fingerprint():
        assert got == want
        return
    assert got["steps"] == want["steps"] == build.PREFIX_STEPS
    if got["batches_sha256"] == want["batches_sha256"]:
        assert got["losses"] == pytest.approx(want["losses"], rel=1e-4)
    else:
        docs = _prefix_documents(p, record["seed"])
        assert any(re.search(r"mean -?[\d.]+e-(?:1\d|[2-9]\d)\b", d) for d in docs), \
            "the token ids trained on changed, and not where a centred series' mean is roundoff"
        assert got["losses"] == pytest.approx(want["losses"], rel=1e-3)


def _prefix_documents(p: BackbonePreset, seed: int) -> list[str]:
    """The corpus documents in the build's first PREFIX_STEPS batches (`_batches` reads one more,
    which it keeps for the next batch)."""
    taken = []

    def docs():
        for d in corpus.iter_documents(seed, max_tokens=p.seq_len, mix=p.corpus_mix()):
            taken.append(d)
            yield d

    batches = build._batches(docs(), p.batch_size, p.seq_len)
    for _ in range(build.PREFIX_STEPS):
        next(batches)
    return taken[:-1]
