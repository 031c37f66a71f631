"""What several `sdt` commands share: option defaults taken from the config dataclasses, YAML
option defaults (--config, --preset), the placement options, and small option parsers."""

from __future__ import annotations

import click

from specdifftree.errors import SDTError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def option_default(field: str, config=None):
    """An option's default is its config dataclass's default (SearchConfig unless given): one place for both."""
    if config is None:
        from specdifftree.search.common import SearchConfig as config

    return config.__dataclass_fields__[field].default


def amortize_default(field: str):
    from specdifftree.amortize.train import AmortizeConfig

    return option_default(field, AmortizeConfig)


def presets(kind: str) -> list[str]:
    from specdifftree.config import preset_names

    return preset_names(kind)


def option_defaults(ctx: click.Context, data: dict, where: str) -> None:
    """Option defaults from a YAML mapping (keys are option names, e.g. `iterations`, `lam`), merged
    by the one precedence rule (config.py): command line > file > built-in defaults."""
    from specdifftree.config import merge, no_unknown

    # a key is an option's name (`reward`, `lambda`) or its parameter's (`rewards`, `lam`)
    names = {o.lstrip("-").replace("-", "_"): p.name for p in ctx.command.params if p.name for o in [*p.opts, p.name]}
    data = {names.get(str(k).replace("-", "_"), str(k).replace("-", "_")): v for k, v in data.items()}
    no_unknown(data, set(names.values()), where, "option")
    ctx.default_map = merge(ctx.default_map or {}, data)


def load_yaml_defaults(ctx: click.Context, _param, path):
    """--config FILE.yaml: option defaults from a YAML file."""
    if path:
        from specdifftree.config import read_yaml

        option_defaults(ctx, read_yaml(path), f"config {path}")
    return path


def load_search_preset(ctx: click.Context, _param, name):
    """--preset NAME: option defaults from configs/search/NAME.yaml (a --config file wins over it)."""
    if name:
        from specdifftree.config import load_preset, merge

        before = ctx.default_map or {}
        ctx.default_map = {}
        option_defaults(ctx, load_preset("search", name), f"search preset '{name}'")
        ctx.default_map = merge(ctx.default_map, before)
    return name


def placement_options(fn):
    """--device, --dtype and --n-gpu-layers: where a command that loads a prior runs its model."""
    fn = click.option("--n-gpu-layers", type=int, default=None,
                      help="gguf: layers offloaded to the GPU (-1: all) [default: all when the device is CUDA].")(fn)
    fn = click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
                      show_default=True, help="Model weights (auto: bfloat16 on CUDA, float32 elsewhere).")(fn)
    return click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]|mps",
                        help="Where the model, encoder, bias head, grammar mask and sampling run "
                             "(auto: CUDA when available).")(fn)


def placement(device: str, dtype: str, n_gpu_layers):
    from specdifftree.prior.backbones.base import Placement

    return Placement(device, dtype, n_gpu_layers).validate()


def int_list(text: str, what: str) -> list[int]:
    """Comma-separated positive integers (`--budgets 100,200`), else SDTError naming the option."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SDTError(f"{what} must be comma-separated integers, got '{text}'") from None
    if not vals or min(vals) < 1:
        raise SDTError(f"{what} must be positive integers")
    return vals
