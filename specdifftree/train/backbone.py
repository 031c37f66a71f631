"""Pretraining the embedded default backbone (`sdt pretrain-backbone --preset NAME`): a small Llama
trained on the corpus of `data/corpus.py`, written as a transformers directory.

    path = pretrain_backbone("runs/bb", "default")        # the committed default-v7, rebuilt
    path = ensure_backbone("tiny")                         # located, or built once into sdt_home()
    record = prefix_record("default")                      # hashes of the build's first PREFIX_STEPS steps

Presets (`BackbonePreset`, train/config.py; configs/backbone/*.yaml) fix the architecture, the
recipe and the corpus mix. A preset may start from a committed backbone's weights (`init:
default-v5-base`) instead of random ones: training on, reproducibly, since the committed weights
are fixed and their sha256 recorded. A preset with more layers than its init starts from a
deepened copy (`expand_layers`, block expansion): the same function, with room to learn more.
The `default` preset (configs/backbone/default.yaml) does: default-v7 is default-v6 (the
`default-v6` preset) deepened from 4 to 8 layers and trained 1,500 more steps on fresh windows;
default-v6 is default-v5 (the `default-v5` preset) trained 1,500 more steps at a lower learning
rate; default-v5 is default-v5-base (the `scratch4` preset, the `BackbonePreset` defaults) trained
1,500 more steps on an M4-weighted mix. All four ship, so each rebuilds from the one before.

Training: AdamW, linear warm-up then cosine decay to 10%, gradient clip 1.0, rows packed greedily
with whole documents (each row starts with a document at position 0), right-padded with PAD, loss
on non-pad tokens. Deterministic: the corpus comes from the seed, the weights from torch's
generator seeded with it (`machine.seeded`, restored after the build), and torch runs with a fixed
thread count (`BackbonePreset.threads`) because the thread count changes the order of float
reductions, with deterministic algorithms (`machine.training_threads`). Two builds with the same
seed on the same machine give bit-identical safetensors; a machine with another
`machine.fingerprint()` (another SIMD level of numpy or torch, another torch) may differ in the
last bits. The record of a build (sdt_backbone.json, with that fingerprint as "machine") holds hashes of its first PREFIX_STEPS steps (`prefix_record`), which tests/test_default_backbone.py
rebuilds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Union

import numpy as np

from specdifftree.data.corpus import ETT_TRAIN_FRACTION, MIX, iter_documents, real_series
from specdifftree.errors import SDTError
from specdifftree.files import file_sha256, replace_dir
from specdifftree.machine import seeded, training_threads
from specdifftree.paths import default_data_dir as data_dir
from specdifftree.prior import default
from specdifftree.prior.tokenizer import EOS_ID, EOS_TOKEN, PAD_ID, VOCAB_SIZE
from specdifftree.train.config import BackbonePreset

if TYPE_CHECKING:
    import torch


def encode_document(doc: str) -> list[int]:
    """Token ids of a corpus document: bytes, then EOS (same ids as the HF tokenizer gives)."""
    assert doc.endswith(EOS_TOKEN)
    return list(doc[: -len(EOS_TOKEN)].encode("ascii")) + [EOS_ID]


def _batches(docs: Iterator[str], batch_size: int, seq_len: int) -> Iterator[torch.Tensor]:
    """Rows packed greedily with whole documents, right-padded with PAD.  -> [B, T<=seq_len] int64"""
    import torch

    pending = encode_document(next(docs))
    while True:
        rows = []
        for _ in range(batch_size):
            row: list[int] = []
            while len(row) + len(pending) <= seq_len:
                row += pending
                pending = encode_document(next(docs))
            rows.append(row)
        width = max(map(len, rows))
        yield torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows], dtype=torch.long)


# --------------------------------------------------------------------------- training


PREFIX_STEPS = 4  # the build's first steps, hashed into its record (`prefix_record`)


def pretrain_backbone(out_dir: Union[str, Path], preset: Union[str, BackbonePreset] = "default",
                      seed: Optional[int] = None, progress: bool = True, device: str = "cpu",
                      checkpoint_every: int = 0) -> Path:
    """Train the backbone from scratch and write a transformers directory at out_dir (atomically:
    built in out_dir.tmp-<pid>, then renamed; an existing out_dir is replaced). seed None = the
    preset's seed. Returns out_dir. The directory's sdt_backbone.json records the command, preset,
    seed, corpus, loss curve, versions, CPU, device and `prefix_record` of the first PREFIX_STEPS steps.

    device: where the steps run, in float32 ("cpu", "cuda[:N]", "mps"; `Placement` rules). The
    committed backbones and their prefix hashes are CPU builds: another device trains the same
    recipe on the same batches, but its float reductions differ, so its weights are not the CPU's.

    checkpoint_every > 0: every that many steps the build's state goes to out_dir.ckpt
    (`train/backbone_state.py`); a build of the same preset and seed finding it there goes on from
    it (same weights as without the interruption) and removes it when done."""
    import torch

    from specdifftree.machine import cpu_name, fingerprint, version
    from specdifftree.prior.tokenizer import build_hf_tokenizer

    p = BackbonePreset.from_name(preset) if isinstance(preset, str) else preset
    seed = p.seed if seed is None else int(seed)
    out_dir = Path(out_dir)
    start = time.time()
    ckpt = out_dir.with_name(f"{out_dir.name}.ckpt") if checkpoint_every > 0 else None
    model, run = _train(p, seed, p.stop or p.steps, progress, device, ckpt, checkpoint_every)
    start -= run["resumed_s"]
    losses = run["losses"]
    tail = losses[-max(1, len(losses) // 10):]
    every = max(1, len(losses) // 50)
    record = {
        "command": f"sdt pretrain-backbone --preset {p.name} --seed {seed} --out DIR"
                   + (f" --device {device}" if run["device"] != "cpu" else ""),
        "preset": asdict(p), "seed": seed, "steps": len(losses), "train_tokens": run["tokens"],
        "initial_loss": losses[0], "final_loss": float(np.mean(tail)), "uniform_loss": math.log(VOCAB_SIZE),
        "loss_curve": {str(i): round(v, 4) for i, v in enumerate(losses) if i % every == 0 or i == len(losses) - 1},
        "prefix": run["prefix"], "weights_sha256": _weights_sha256(model), "corpus": _corpus_description(p),
        "wall_time_s": None, "torch": torch.__version__, "transformers": version("transformers"), "cpu": cpu_name(),
        "machine": fingerprint(), "device": run["device"],
    }
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        model.generation_config.eos_token_id = EOS_ID
        model.generation_config.pad_token_id = PAD_ID
        model.generation_config.bos_token_id = EOS_ID
        _save_quietly(model, tmp)
        tok = build_hf_tokenizer()
        tok.model_max_length = p.max_position_embeddings
        tok.save_pretrained(tmp)
        record["wall_time_s"] = round(time.time() - start, 1)
        (tmp / "sdt_backbone.json").write_text(json.dumps(record, indent=2) + "\n")
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if ckpt is not None:
        shutil.rmtree(ckpt, ignore_errors=True)
    return out_dir


def prefix_record(preset: Union[str, BackbonePreset] = "default", seed: Optional[int] = None) -> dict:
    """The first PREFIX_STEPS steps of the preset's build (same schedule, stopped early), as the
    build records them: {"steps", "batches_sha256" (the token ids trained on), "weights_sha256"
    (every parameter's float32 bytes, by name), "losses"}. Seconds to compute; a test compares it
    with the committed backbone's record."""
    p = BackbonePreset.from_name(preset) if isinstance(preset, str) else preset
    return _train(p, p.seed if seed is None else int(seed), PREFIX_STEPS, progress=False)[1]["prefix"]


def _documents(p: BackbonePreset, seed: int) -> Iterator[str]:
    """The preset's corpus stream."""
    if p.corpus == "text":
        from specdifftree.data.text_corpus import iter_text_documents

        return iter_text_documents(seed, max_tokens=p.seq_len)
    return iter_documents(seed, max_tokens=p.seq_len, mix=p.corpus_mix())


def _train(p: BackbonePreset, seed: int, steps: int, progress: bool, device: str = "cpu",
           ckpt: Optional[Path] = None, every: int = 0):
    """The first `steps` steps of the preset's training (its schedule runs over p.steps), on `device`;
    with ckpt, its state saved there every `every` steps and resumed from there when it matches.
    -> (model in eval mode, on the CPU; {"losses", "tokens", "prefix", "device"})"""
    from specdifftree.train.backbone_state import load_state, save_state

    import hashlib

    import torch
    from transformers import LlamaForCausalLM

    from specdifftree.prior.backbones.base import Placement
    from specdifftree.progress import progress as progress_bar

    dev = Placement(device, "float32").torch_device()
    with training_threads(p.threads):
        with seeded(seed):  # initialised on the CPU: the same weights on every device
            model = LlamaForCausalLM(p.llama_config()).to(dev)
            model.train()
            decay = [w for w in model.parameters() if w.dim() >= 2]
            no_decay = [w for w in model.parameters() if w.dim() < 2]
            opt = torch.optim.AdamW([{"params": decay, "weight_decay": p.weight_decay},
                                     {"params": no_decay, "weight_decay": 0.0}], lr=p.lr, betas=(0.9, 0.95))
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, p))
            if p.init:
                _load_init(model, p.init)
            batches = _batches(_documents(p, seed), p.batch_size, p.seq_len)
            losses, tokens, seen, prefix, first = [], 0, hashlib.sha256(), None, 0
            began, resumed_s = time.time(), 0.0  # wall time of this run; of the runs before a resume
            who = {"preset": asdict(p), "seed": seed, "steps": p.steps}
            meta = load_state(ckpt, model, opt) if ckpt is not None and ckpt.is_dir() else None
            if meta is not None and meta["who"] == json.loads(json.dumps(who)):
                losses, tokens, prefix, first = meta["losses"], meta["tokens"], meta["prefix"], meta["step"]
                resumed_s = float(meta.get("elapsed_s", 0.0))
                for _ in range(first):  # the stream replayed to where the checkpoint was taken
                    next(batches)
                for g in opt.param_groups:
                    g["lr"] = g["initial_lr"] * _lr_factor(first, p)
                sched.last_epoch = first
            elif meta is not None:
                raise SDTError(f"{ckpt} holds a checkpoint of another build; remove it or build elsewhere")
            bar = progress_bar(steps, f"pretraining {p.name} backbone", "steps", enabled=progress, leave=True,
                               initial=first)
            for step in range(first, steps):
                ids = next(batches)
                labels = ids.masked_fill(ids == PAD_ID, -100)
                loss = model(input_ids=ids.to(dev), labels=labels.to(dev)).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                tokens += int((ids != PAD_ID).sum())
                seen.update(ids.numpy().tobytes())
                if step + 1 == min(PREFIX_STEPS, steps):
                    prefix = {"steps": step + 1, "batches_sha256": seen.hexdigest(),
                              "weights_sha256": _weights_sha256(model), "losses": list(losses)}
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
                bar.update(1)
                if ckpt is not None and every > 0 and (step + 1) % every == 0 and step + 1 < steps:
                    save_state(ckpt, model, opt, {"who": who, "step": step + 1, "losses": losses, "tokens": tokens,
                                                  "prefix": prefix, "elapsed_s": resumed_s + time.time() - began})
            bar.close()
            model.eval().to("cpu")
    return model, {"losses": losses, "tokens": tokens, "prefix": prefix, "device": _device_name(dev),
                   "resumed_s": resumed_s}


def _device_name(dev) -> str:
    """"cpu", or the accelerator with its model name ("cuda:0 (NVIDIA H100 80GB HBM3)")."""
    import torch

    if dev.type != "cuda":
        return dev.type
    index = torch.cuda.current_device() if dev.index is None else dev.index
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def init_weights(name: str) -> Path:
    """The weights file a preset's `init` names: a committed backbone under PACKAGED, or else the
    backbone preset of that name, built on first use into sdt_home() (`ensure_backbone`),
    so a chain of presets rebuilds from its first link without committing every link."""
    from specdifftree.config import preset_names

    path = default.PACKAGED / name / "model.safetensors"
    if path.is_file():
        return path
    if name != "default" and name in preset_names("backbone"):
        return ensure_backbone(name) / "model.safetensors"
    raise SDTError(f"backbone preset: init '{name}' names no committed backbone ({path} is missing) "
                   "and no backbone preset")


def _load_init(model, name: str) -> None:
    """Copy the committed backbone `name`'s weights into model (same architecture, strict; a model
    with more layers gets them by `expand_layers`)."""
    from safetensors.torch import load_file

    state = load_file(init_weights(name))
    have, want = _num_layers(state), model.config.num_hidden_layers
    try:
        if want > have:
            state = expand_layers(state, want)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, SDTError) as e:
        raise SDTError(f"backbone preset: init '{name}' has another architecture than the preset: "
                       f"{str(e).splitlines()[0]}") from None


def _num_layers(state: dict) -> int:
    return len({k.split(".")[2] for k in state if k.startswith("model.layers.")})


def expand_layers(state: dict, num_layers: int) -> dict:
    """Deepen a Llama state dict without changing its function (block expansion, LLaMA Pro, Wu et
    al. 2024): the n layers are split into `num_layers - n` equal groups, and after each group goes
    a copy of the group's last layer whose two output projections (self_attn.o_proj, mlp.down_proj)
    are zero, so the new layer adds nothing to the residual stream until training moves them.
    8 -> 12 layers: A B B' C D D' ...; 8 -> 16: A A' B B' ...  state: name -> tensor (not modified)."""
    n = _num_layers(state)
    extra = num_layers - n
    if extra <= 0 or n % extra:
        raise SDTError(f"cannot expand {n} layers to {num_layers}: the new layers must split the old ones "
                       f"into equal groups ({n} must be a multiple of {num_layers} - {n})")
    group = n // extra
    out = {k: w for k, w in state.items() if not k.startswith("model.layers.")}
    blocks = [{k.split(".", 3)[3]: w for k, w in state.items() if k.startswith(f"model.layers.{i}.")}
              for i in range(n)]
    zeroed = ("self_attn.o_proj.weight", "mlp.down_proj.weight")
    deeper = []
    for i, block in enumerate(blocks):
        deeper.append({k: w.clone() for k, w in block.items()})
        if (i + 1) % group == 0:
            deeper.append({k: w.clone().zero_() if k in zeroed else w.clone() for k, w in block.items()})
    for j, block in enumerate(deeper):
        out.update({f"model.layers.{j}.{k}": w for k, w in block.items()})
    return out


def _weights_sha256(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, w in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(w.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_quietly(model, path: Path) -> None:
    """save_pretrained (safetensors), without transformers' progress bar (a terminal's control
    characters in a log); the build's own progress says where it is."""
    from specdifftree.progress import quiet_model_loading

    with quiet_model_loading():
        model.save_pretrained(path)


def _lr_factor(step: int, p: BackbonePreset) -> float:
    if step < p.warmup:
        return (step + 1) / p.warmup
    frac = (step - p.warmup) / max(1, p.steps - p.warmup)
    return p.min_lr_ratio + (1 - p.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def _corpus_description(p: BackbonePreset) -> dict:
    root = data_dir()
    real = real_series(root)
    init = {"init": p.init, "init_sha256": file_sha256(init_weights(p.init))} if p.init else {}
    return {
        **init,
        "mix": MIX,
        "synthetic": "sines, trends, AR(1), regime shifts, spikes, ECG-like, accelerometer-like"
                     + (f"; {p.periodic_share:.0%} repeated shapes (periodic_series)" if p.periodic_share else ""),
        "lengths": f"history {p.history[0]}-{p.history[1]}, horizon {p.horizon[0]}-{p.horizon[1]} (shortened to fit seq_len)",
        "real_data_dir": str(root) if root else None,
        "real_series": len(real),
        "real_sources": sorted({name.split(":")[0] for name, _ in real}),
        "real_fraction_read": ETT_TRAIN_FRACTION,
        "real_share_of_windows": p.real_share if real else 0.0,
        **({"ett_share_of_real_windows": p.ett_share} if p.ett_share else {}),
        **(_text_description() if p.corpus == "text" else {}),
    }


def _text_description() -> dict:
    """What the text corpus adds (data/text_corpus.py); its series documents are drawn with its own
    fields (SERIES_MIX), which replace the preset's corpus fields."""
    from specdifftree.data.text_corpus import SERIES_MIX, TEXT_MIX

    return {"text_mix": TEXT_MIX, "series_documents": asdict(SERIES_MIX),
            "text": "curriculum stage examples of the train split (stages 1-5: prompt + answer); level-3 "
                    "captions of accelerometer activity pieces and of ECG windows with annotated beats"}


# --------------------------------------------------------------------------- build on first use


def ensure_backbone(preset: str = "default", progress: bool = True) -> Path:
    """The preset's backbone where `prior.default.default_backbone` finds it (the packaged default,
    or sdt_home()/backbones/<name>), else built there now. A file lock makes concurrent callers wait
    for one build; the directory appears only complete (atomic rename)."""
    try:
        return default.default_backbone(preset)
    except SDTError:
        pass
    target = default.cache_dir(preset)
    root, name = target.parent, target.name
    p = BackbonePreset.from_name(preset)
    root.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(root / f".{name}.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process to finish building the {preset} backbone in {target} ...",
                  file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if default.is_built(target):
                return target
            for stale in root.glob(f"{name}.tmp-*"):  # left by a killed build (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            minutes = max(1, round(p.minutes))
            print(f"building the {preset} backbone (first use, about {minutes} minute{'s' * (minutes > 1)}) "
                  f"into {target} ...", file=sys.stderr, flush=True)
            pretrain_backbone(target, p, progress=progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target
