"""The trainable prior parts: encoder masking, heads, and pickle-free checkpoints."""

import hashlib
import json
import math
import pickle

import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specdifftree.errors import SDTError
from specdifftree.prior.checkpoint import (
    CONFIG,
    WEIGHTS,
    build_from_checkpoint,
    load_checkpoint,
    parts_config,
    save_checkpoint,
)
from specdifftree.prior.encoder import EncoderConfig, TransformerCNNEncoder, normalize, pool
from specdifftree.prior.heads import LogitBiasHead, SoftPromptProjector

SMALL = EncoderConfig(patch=4, width=32, layers=2, heads=4, ff=64, max_patches=96)
V = 50


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    enc = TransformerCNNEncoder(SMALL).eval()
    return enc, LogitBiasHead(SMALL.width, V).eval(), SoftPromptProjector(SMALL.width, 24).eval()


def _pooled(enc, x, mask=None):
    with torch.no_grad():
        h, pm = enc(x, mask)
    return h, pm, pool(h, pm)


def test_shapes(parts):
    enc, head, proj = parts
    x = torch.randn(3, 37)
    h, pm = enc(x)
    assert h.shape == (3, 10, SMALL.width) and pm.shape == (3, 10) and pm.dtype == torch.bool
    assert pm.all()  # the last patch (1 real point + 3 pad) is valid
    c = pool(h, pm)
    assert c.shape == (3, SMALL.width)
    assert head(c).shape == (3, V)
    assert proj(h).shape == (3, 10, 24)
    assert TransformerCNNEncoder.pool is pool and TransformerCNNEncoder.normalize is normalize


def test_default_config_matches_opentslm():
    c = EncoderConfig()
    assert (c.patch, c.width, c.layers, c.heads, c.ff, c.max_patches, c.max_len) == (4, 128, 6, 8, 1024, 1024, 4096)


def test_padding_changes_nothing(parts):
    enc, _, _ = parts
    torch.manual_seed(1)
    a, b = torch.randn(23), torch.randn(40)
    x = torch.full((2, 40), float("nan"))  # padding may hold anything
    x[0, :23], x[1] = a, b
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[0, :23], mask[1] = True, True
    h, pm, c = _pooled(enc, x, mask)
    h1, pm1, c1 = _pooled(enc, a[None])
    assert pm[0].sum() == 6 and pm1.all() and pm1.shape == (1, 6)
    assert torch.allclose(c[0], c1[0], atol=1e-6, rtol=0)
    assert torch.allclose(h[0, :6], h1[0], atol=1e-6, rtol=0)
    assert (h[0, 6:] == 0).all()  # padded patches are zero
    assert torch.allclose(c[1], _pooled(enc, b[None])[2][0], atol=1e-6, rtol=0)


def test_gradients_finite_with_padding():
    torch.manual_seed(2)
    enc = TransformerCNNEncoder(SMALL).train()
    x, mask = torch.randn(2, 30), torch.ones(2, 30, dtype=torch.bool)
    mask[0, 9:] = False
    h, pm = enc(x, mask)
    pool(h, pm).pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


def test_head_starts_near_zero(parts):
    _, head, _ = parts
    assert torch.equal(head.proj.bias, torch.zeros(V))
    assert 0.005 < head.proj.weight.std().item() < 0.015
    c = torch.randn(4, SMALL.width)  # encoder output after LayerNorm is O(1)
    assert head(c).abs().max().item() < 0.5


@pytest.mark.parametrize(
    "x, mask, words",
    [
        ([[0.0, 1.0, float("nan"), 3.0, 4.0]], None, ["series 0", "nan", "index 2"]),
        ([[0.0] * 8, [1.0, float("inf")] + [0.0] * 6], None, ["series 1", "inf", "index 1"]),
        ([[1.0, 2.0, 3.0]], None, ["series 0", "3 valid points", "one patch of 4"]),
        ([[1.0] * 8, [1.0] * 8], [[True] * 8, [True] * 2 + [False] * 6], ["series 1", "2 valid points"]),
        ([[0.0] * (96 * 4 + 1)], None, ["385 points", "limit of 384"]),
        ([1.0, 2.0, 3.0, 4.0], None, ["[B, L]"]),
    ],
)
def test_bad_series_refused(parts, x, mask, words):
    enc, _, _ = parts
    mask = None if mask is None else torch.tensor(mask)
    with pytest.raises(SDTError) as e:
        enc(torch.tensor(x), mask)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_normalize_round_trip():
    torch.manual_seed(3)
    x = torch.randn(3, 50) * torch.tensor([[1.0], [1e3], [1e-3]]) + torch.tensor([[5.0], [-2e4], [0.0]])
    x[2] = 7.0  # constant: std floored, z = 0
    mask = torch.ones(3, 50, dtype=torch.bool)
    mask[1, 30:] = False
    z, mean, std = normalize(x, mask)
    back = z * std[:, None] + mean[:, None]
    assert torch.allclose(back[mask], x[mask], rtol=1e-6, atol=1e-4)
    assert torch.equal(z[2], torch.zeros(50)) and std[2].item() == pytest.approx(1e-8) and mean[2] == 7.0
    assert z[0].mean().abs() < 1e-6 and z[0].std(unbiased=False).sub(1).abs() < 1e-5
    assert (z[1, 30:] == 0).all() and z[1, :30].std(unbiased=False).sub(1).abs() < 1e-5
    with pytest.raises(SDTError, match="series 0 has a non-finite value"):
        normalize(torch.tensor([[1.0, float("nan")]]))


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 300), extra=st.integers(0, 40), fill=st.sampled_from([0.0, 9.0, float("nan")]))
def test_mask_and_pad_random_lengths(parts, length, extra, fill):
    enc, _, _ = parts
    patch = SMALL.patch
    series = torch.sin(torch.arange(length) * 0.37) + torch.arange(length) * 0.01
    x = torch.full((2, length + extra), fill)
    x[0, :length], x[1] = series, torch.cos(torch.arange(length + extra) * 0.1)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, length:] = False
    if length < patch:
        with pytest.raises(SDTError, match=f"series 0 has {length} valid points"):
            enc(x, mask)
        return
    P = math.ceil(length / patch)
    h, pm, c = _pooled(enc, x, mask)
    assert h.shape[1] == math.ceil((length + extra) / patch)
    assert pm[0].tolist() == [True] * P + [False] * (h.shape[1] - P)
    h1, pm1, c1 = _pooled(enc, series[None])
    assert pm1.shape == (1, P) and pm1.all()
    assert torch.allclose(h[0, :P], h1[0], atol=1e-5, rtol=0)
    assert torch.allclose(c[0], c1[0], atol=1e-6, rtol=0)
    assert (h[0, P:] == 0).all()


# ---------------------------------------------------------------------------------------------- checkpoints


def _save(tmp_path, parts, with_projector=True):
    enc, head, proj = parts
    modules = {"encoder": enc, "head": head} | ({"projector": proj} if with_projector else {})
    d = tmp_path / "ckpt"
    save_checkpoint(d, modules, parts_config(enc, head, proj if with_projector else None, backbone="default"))
    return d


def test_round_trip_bit_identical(tmp_path, parts, monkeypatch):
    enc, head, proj = parts
    d = _save(tmp_path, parts)
    assert sorted(p.name for p in d.iterdir()) == [CONFIG, WEIGHTS]  # no temporary files left
    config = json.loads((d / CONFIG).read_text())
    assert config["format_version"] == 1 and config["backbone"] == "default" and config["vocab_size"] == V
    assert config["encoder"] == dict(patch=4, width=32, layers=2, heads=4, ff=64, max_patches=96, dropout=0.0,
                                     norm_first=True, final_norm=True)

    def no_unpickling(*a, **k):
        raise AssertionError("a checkpoint load tried to unpickle")

    for obj, attr in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")]:
        monkeypatch.setattr(obj, attr, no_unpickling)
    enc2, head2, proj2, config2 = build_from_checkpoint(d)
    monkeypatch.undo()

    assert config2 == config
    for a, b in [(enc, enc2), (head, head2), (proj, proj2)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(2, 41)
    with torch.no_grad():
        (h, pm), (h2, pm2) = enc(x), enc2(x)
        assert torch.equal(h, h2) and torch.equal(pm, pm2)
        assert torch.equal(head(pool(h, pm)), head2(pool(h2, pm2))) and torch.equal(proj(h), proj2(h2))


def test_round_trip_float64_and_no_projector(tmp_path):
    torch.manual_seed(4)
    enc, head = TransformerCNNEncoder(SMALL).double().eval(), LogitBiasHead(SMALL.width, V).double()
    d = tmp_path / "c64"
    save_checkpoint(d, {"encoder": enc, "head": head}, parts_config(enc, head))
    save_checkpoint(d, {"encoder": enc, "head": head}, parts_config(enc, head))  # overwriting is fine
    enc2, head2, proj2, _ = build_from_checkpoint(d)
    assert proj2 is None and enc2.pos_embed.dtype == torch.float64
    x = torch.randn(1, 16, dtype=torch.float64)
    assert torch.equal(enc(x)[0], enc2(x)[0])


def _rewrite_weights(d, change):
    """Edit the weights file and re-sign it, so only the later checks can catch the edit."""
    state, config = load_checkpoint(d)
    tensors = {f"{m}.{k}": t for m, sd in state.items() for k, t in sd.items()}
    change(tensors, config)
    blob = safetensors.torch.save(tensors)
    (d / WEIGHTS).write_bytes(blob)
    config["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    (d / CONFIG).write_text(json.dumps(config))


def _refused(d, *words, build=False):
    with pytest.raises(SDTError) as e:
        (build_from_checkpoint if build else load_checkpoint)(d)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_tampered_weights_refused(tmp_path, parts):
    d = _save(tmp_path, parts)
    blob = bytearray((d / WEIGHTS).read_bytes())
    blob[-3] ^= 0x01
    (d / WEIGHTS).write_bytes(bytes(blob))
    _refused(d, WEIGHTS, "sha256", "does not match")


def test_missing_tensor_refused(tmp_path, parts):
    d = _save(tmp_path, parts)
    _rewrite_weights(d, lambda t, c: t.pop("head.proj.bias"))
    _refused(d, WEIGHTS, "'head.proj.bias'", "missing")

    def drop_everywhere(t, c):  # consistent file and manifest, but the module needs the tensor
        t.pop("encoder.pos_embed")
        c["tensors"].pop("encoder.pos_embed")

    d2 = _save(tmp_path / "b", parts)
    _rewrite_weights(d2, drop_everywhere)
    load_checkpoint(d2)
    _refused(d2, WEIGHTS, "missing tensor 'encoder.pos_embed'", build=True)


def test_bad_checkpoint_files_refused(tmp_path, parts):
    _refused(tmp_path / "nowhere", "not found")
    d = _save(tmp_path, parts)
    config_text = (d / CONFIG).read_text()
    (d / CONFIG).write_text(config_text[:-20])
    _refused(d, CONFIG, "not valid JSON")
    (d / CONFIG).write_text(config_text.replace('"format_version": 1', '"format_version": 99'))
    _refused(d, CONFIG, "format version 99")
    (d / CONFIG).unlink()
    _refused(d, CONFIG, "file missing")
    d2 = _save(tmp_path / "b", parts)
    _rewrite_weights(d2, lambda t, c: c["encoder"].update(width=16))
    _refused(d2, "has shape", build=True)
