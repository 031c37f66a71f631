"""The experiment file: one YAML mapping that names a grid of methods x budgets x datasets x seeds.

    name: sadt_table                  # W&B group; default output dir runs/<name>[-<preset>]
    prior: default                    # a --prior spec: default | DIR | hf:ID_OR_PATH | gguf:FILE | opentslm:CKPT
    backbone: hf:LLM_DIR              # optional: --backbone (the LLM of an opentslm: prior)
    reward: spectral                  # a --reward spec (string or list, summed)
    budgets: [4000, 16000]            # forward tokens per query (prompt prefill included)
    seeds: [0, 1, 2]
    search: {lam: 1.0, samples: 16}   # SearchConfig defaults for every method
    datasets:
      ETTh1-OT-h24: {source: ett, file: ett/ETTh1.csv, column: OT, horizon: 24, windows: 20}
      M4-Hourly-h48: {source: m4, horizon: 48, context_length: 192, windows: 20, budget_scale: 2}
      ETTh1-caption: {source: ett, file: ett/ETTh1.csv, task: caption, windows: 8}   # text tasks:
      HAR-qa: {source: har, task: qa, context_length: 512, question: "What is the person doing?",
               choices: "walking,standing,sitting,stairs"}          # experiments/text_windows.py
    methods:                          # name: SearchConfig overrides, plus budget_scale
      sample: {}
      dts: {}
      sadt: {budget_scale: 0.1, alpha: 0.5}
      sadt-a0: {method: sadt, budget_scale: 0.1, alpha: 0.0}   # a variant: its own name, `method`
    flow: runs/flow                   # sadt / sadt-sample: a trained flow network DIR, or a mapping
                                      # that trains one first (see experiments/amortization.py)
    threads: 1                        # torch threads (default 1)
    resources: {num_cpus: 1, num_gpus: 0}   # --ray: what each cell's Ray task reserves (GPU cells pack
                                      # onto GPU nodes)
    max_retries: 2                    # --ray: a failed cell is retried this many times
    presets:
      smoke: {seeds: [0], datasets: {ETTh1-OT-h24: {windows: 2}, M4-Hourly-h48: null}}

A preset deep-merges into the file: mappings merge key by key, `null` deletes a key, anything
else replaces. Unknown keys are errors, so a typo never silently changes an experiment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from specdifftree.config import merge, no_unknown, read_yaml
from specdifftree.errors import SDTError

SOURCES = ("ett", "m4", "har")  # har: the chest-accelerometer participants (text tasks only)
PARTS = ("eval", "val")  # data/splits.py
TASKS = ("forecast", "caption", "qa")  # data/tasks.py


@dataclass
class DatasetSpec:
    """Where evaluation windows come from: the eval part of `data/splits.py`, or with `part: val`
    its validation windows (for tuning options on windows that neither the flow network nor
    the evaluation ever use).

    ett: `windows` context windows evenly spaced over the last 20% of `file` (context and target
         both inside it), `column` the target. m4: the first `windows` held-out series of the
         Hourly set, context = the end of the train row, target = the official test row.
    task caption | qa: the same windows' text (no horizon), or for qa the chest accelerometer
         (source har) by participant; experiments/text_windows.py.
    """

    name: str
    source: str  # "ett" | "m4" | "har"
    horizon: Optional[int] = None  # forecast: the values to forecast; text tasks have none
    context_length: int = 96
    windows: int = 10
    file: Optional[str] = None  # ett: CSV path, relative to the data root unless absolute
    column: str = "OT"
    season: int = 24  # MASE's seasonal-naive period (hourly data)
    budget_scale: float = 1.0  # this dataset's cells get budget * budget_scale (longer prompts and answers)
    part: str = "eval"  # "eval" | "val"
    task: str = "forecast"  # "forecast" | "caption" | "qa"
    question: Optional[str] = None  # qa
    choices: Any = None  # qa: "a,b,c" or a list
    variant: str = "middle+low"  # caption: the caption variant asked for (data/captions VARIANTS)
    max_chars: Optional[int] = None  # the caption's or the qa reasoning's cap (default: the task's)

    def validate(self) -> "DatasetSpec":
        where = f"dataset '{self.name}'"
        if self.source not in SOURCES:
            raise SDTError(f"{where}: source must be one of {', '.join(SOURCES)}, got '{self.source}'")
        if self.source == "ett" and not self.file:
            raise SDTError(f"{where}: an ett dataset needs file (e.g. ett/ETTh1.csv)")
        if self.task not in TASKS:
            raise SDTError(f"{where}: task must be one of {', '.join(TASKS)}, got '{self.task}'")
        if self.task != "forecast":
            return self._validate_text(where)
        if self.source == "har":
            raise SDTError(f"{where}: source har has text tasks only (task: caption or qa)")
        for key in ("horizon", "context_length", "windows", "season"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise SDTError(f"{where}: {key} must be a positive integer")
        if not isinstance(self.budget_scale, (int, float)) or not self.budget_scale > 0:
            raise SDTError(f"{where}: budget_scale must be a positive number")
        if self.part not in PARTS:
            raise SDTError(f"{where}: part must be one of {', '.join(PARTS)}, got '{self.part}'")
        if self.context_length <= self.season:
            raise SDTError(f"{where}: context_length must exceed season ({self.season}) for MASE")
        return self

    def _validate_text(self, where: str) -> "DatasetSpec":
        """A caption or qa dataset: no horizon, the task's options as `sdt search --task` checks them."""
        from specdifftree.data.tasks import make_task

        if self.horizon is not None:
            raise SDTError(f"{where}: task {self.task} writes text: remove horizon")
        for key, least in (("context_length", 4), ("windows", 1)):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < least:
                raise SDTError(f"{where}: {key} must be an integer >= {least}")
        if not isinstance(self.budget_scale, (int, float)) or not self.budget_scale > 0:
            raise SDTError(f"{where}: budget_scale must be a positive number")
        if self.part not in PARTS:
            raise SDTError(f"{where}: part must be one of {', '.join(PARTS)}, got '{self.part}'")
        from specdifftree.data.captions import ASK

        if self.variant not in ASK:
            raise SDTError(f"{where}: variant must be one of {', '.join(ASK)}, got '{self.variant}'")
        try:
            make_task(self.task, self.question, self.choices or (), self.max_chars, variant=self.variant)
        except SDTError as e:
            raise SDTError(f"{where}: {str(e).replace('--', '')}") from None
        return self


@dataclass
class MethodSpec:
    """A search method and its SearchConfig overrides; it runs with a cap of budget * budget_scale
    forward tokens (budget_scale 0.1: a tenth of what the other methods get). `name` labels its
    cells; `method` is the search method (default: the name), so variants can share one."""

    name: str
    budget_scale: float = 1.0
    params: dict = field(default_factory=dict)
    method: str = ""

    def __post_init__(self):
        self.method = self.method or self.name


RESOURCES = {"num_cpus": 1, "num_gpus": 0}  # a cell's Ray task, unless the file says otherwise


@dataclass
class ExperimentConfig:
    name: str
    prior: str
    reward: list[str]
    budgets: list[int]
    seeds: list[int]
    datasets: list[DatasetSpec]
    methods: list[MethodSpec]
    search: dict = field(default_factory=dict)  # SearchConfig defaults for every method
    flow: Any = None  # None | a flow network DIR | a mapping (train one first)
    backbone: Optional[str] = None  # --backbone: the LLM of an opentslm: prior (or replacing a DIR's)
    data_root: Optional[str] = None  # default: specdifftree.paths.default_data_dir()
    wandb_project: str = "specdifftree"
    threads: int = 1  # torch threads: small models gain nothing from more, and timings stay comparable
    device: str = "auto"  # where the prior's model runs: auto | cpu | cuda[:N] | mps
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    n_gpu_layers: Optional[int] = None  # gguf priors: layers offloaded to the GPU
    resources: dict = field(default_factory=lambda: dict(RESOURCES))  # --ray: a cell task's num_cpus, num_gpus
    max_retries: int = 2  # --ray: retries of a failed cell (a worker lost, or an exception)
    preset: Optional[str] = None
    source: Optional[str] = None  # the YAML file this came from

    @property
    def label(self) -> str:
        """The name with its preset (sadt_table-smoke): W&B group, results' experiment column."""
        return self.name + (f"-{self.preset}" if self.preset else "")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


TOP_KEYS = {f.name for f in dataclasses.fields(ExperimentConfig)} - {"preset", "source"} | {"presets"}
REQUIRED = ("name", "prior", "reward", "budgets", "datasets", "methods")


def load_experiment(path: str | Path, preset: Optional[str] = None, prior: Optional[str] = None) -> ExperimentConfig:
    """Read, merge the preset (and a `prior` override) into, and validate an experiment YAML file
    (SDTError on any problem)."""
    path = experiment_file(path)
    raw = read_yaml(path, "experiment")
    presets = raw.pop("presets", None) or {}
    if preset is not None:
        if preset not in presets:
            known = ", ".join(presets) or "none"
            raise SDTError(f"experiment {path}: no preset '{preset}' (presets: {known})")
        raw = merge(raw, presets[preset])
    if prior is not None:
        raw["prior"] = prior
    cfg = from_dict(raw, where=f"experiment {path}")
    cfg.preset, cfg.source = preset, str(path)
    return cfg


def experiment_file(path: str | Path) -> Path:
    """`path` where it exists; else a bare `NAME`, `NAME.yaml` or `experiments/NAME.yaml` names the
    packaged experiment file (paths.experiments_dir()), so the documented commands work from any
    directory of an installed package."""
    from specdifftree.paths import experiments_dir

    path = Path(path)
    if path.exists() or len(path.parts) > 2 or (len(path.parts) == 2 and path.parts[0] != "experiments"):
        return path
    packaged = experiments_dir() / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    return packaged if packaged.is_file() else path


def from_dict(raw: dict, where: str = "experiment") -> ExperimentConfig:
    no_unknown(raw, TOP_KEYS, where)
    missing = [k for k in REQUIRED if raw.get(k) in (None, [], {})]
    if missing:
        raise SDTError(f"{where}: missing {', '.join(missing)}")
    reward = raw["reward"] if isinstance(raw["reward"], list) else [raw["reward"]]
    budgets = _int_list(raw["budgets"], "budgets", where)
    seeds = _int_list(raw.get("seeds", [0]), "seeds", where, minimum=0)
    search = search_params(raw.get("search") or {}, f"{where}: search")
    datasets = [_dataset(name, spec, where) for name, spec in _mapping(raw["datasets"], "datasets", where).items()]
    methods = [_method(name, spec, where) for name, spec in _mapping(raw["methods"], "methods", where).items()]
    flow = raw.get("flow")
    if isinstance(flow, dict):
        flow_training(flow, f"{where}: flow")  # checked now, not after hours of other cells
    elif flow is not None and not isinstance(flow, str):
        raise SDTError(f"{where}: flow must be a directory or a mapping of training options")
    return ExperimentConfig(name=str(raw["name"]), prior=str(raw["prior"]), reward=[str(r) for r in reward],
                            budgets=budgets, seeds=seeds, datasets=datasets, methods=methods, search=search,
                            flow=flow, data_root=raw.get("data_root"),
                            backbone=None if raw.get("backbone") is None else str(raw["backbone"]),
                            wandb_project=str(raw.get("wandb_project", "specdifftree")),
                            threads=_int_list(raw.get("threads", 1), "threads", where)[0],
                            resources=_resources(raw.get("resources") or {}, where),
                            max_retries=_int_list(raw.get("max_retries", 2), "max_retries", where, minimum=0)[0],
                            **_placement_keys(raw, where))


def _resources(raw: Any, where: str) -> dict:
    """num_cpus and num_gpus (numbers >= 0) of each cell's Ray task, over the defaults."""
    raw = _mapping(raw, "resources", where)
    no_unknown(raw, set(RESOURCES), f"{where}: resources")
    out = {**RESOURCES, **raw}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in out.values()):
        raise SDTError(f"{where}: resources: num_cpus and num_gpus must be numbers >= 0")
    return out


def _placement_keys(raw: dict, where: str) -> dict:
    """device, dtype and n_gpu_layers, checked (as `--device`, `--dtype`, `--n-gpu-layers` are)."""
    from specdifftree.prior.backbones.base import Placement

    keys = {"device": str(raw.get("device", "auto")), "dtype": str(raw.get("dtype", "auto")),
            "n_gpu_layers": raw.get("n_gpu_layers")}
    if keys["n_gpu_layers"] is not None and not isinstance(keys["n_gpu_layers"], int):
        raise SDTError(f"{where}: n_gpu_layers must be an integer")
    try:
        Placement(**keys).validate()
    except SDTError as e:
        raise SDTError(f"{where}: {str(e).replace('--', '')}") from None
    return keys


def _dataset(name: str, spec: Any, where: str) -> DatasetSpec:
    spec = _mapping(spec, f"datasets.{name}", where)
    known = {f.name for f in dataclasses.fields(DatasetSpec)} - {"name"}
    no_unknown(spec, known, f"{where}: dataset '{name}'")
    try:
        return DatasetSpec(name=str(name), **spec).validate()
    except TypeError as e:
        raise SDTError(f"{where}: dataset '{name}': {e}") from None


def _method(name: str, spec: Any, where: str) -> MethodSpec:
    params = dict(_mapping(spec or {}, f"methods.{name}", where))
    scale = params.pop("budget_scale", 1.0)
    method = params.pop("method", name)
    if not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise SDTError(f"{where}: method '{name}': budget_scale must be in (0, 1]")
    if not isinstance(method, str) or not method:
        raise SDTError(f"{where}: method '{name}': method must be a search method's name")
    return MethodSpec(str(name), float(scale), search_params(params, f"{where}: method '{name}'"), method)


def search_params(params: Any, where: str) -> dict:
    """SearchConfig overrides, checked by name; budget and seed come from the grid."""
    from specdifftree.search.common import SearchConfig

    params = dict(_mapping(params, "search options", where))
    forbidden = sorted({"budget", "seed"} & set(params))
    if forbidden:
        raise SDTError(f"{where}: {', '.join(forbidden)} come from the grid (budgets, seeds)")
    no_unknown(params, {f.name for f in dataclasses.fields(SearchConfig)}, where, "SearchConfig field")
    return params


def _mapping(value: Any, key: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise SDTError(f"{where}: {key} must be a mapping")
    return value


def _int_list(value: Any, key: str, where: str, minimum: int = 1) -> list[int]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values):
        raise SDTError(f"{where}: {key} must be a list of integers >= {minimum}")
    return values


# ------------------------------------------------------------------ the flow network's training (`flow:`)


@dataclass
class FlowTraining:
    datasets: Optional[list[str]] = None  # experiment datasets whose flow-train part gives contexts (None: all)
    contexts: int = 16  # per dataset
    method: str = "dts"  # dts or dts-star: the searches that fill the buffer
    search: dict = field(default_factory=lambda: {"iterations": 128})
    amortize: dict = field(default_factory=dict)


def flow_training(raw: dict, where: str = "flow") -> FlowTraining:
    """A validated FlowTraining from the experiment file's `flow:` mapping (SDTError otherwise)."""
    from specdifftree.amortize.train import AmortizeConfig
    from specdifftree.search.common import SearchConfig

    no_unknown(raw, {f.name for f in dataclasses.fields(FlowTraining)}, where)
    ft = FlowTraining(**raw)
    if not isinstance(ft.contexts, int) or ft.contexts < 1:
        raise SDTError(f"{where}: contexts must be a positive integer")
    from specdifftree.search.registry import methods_where

    if ft.method not in methods_where(soft_values=True):
        raise SDTError(f"{where}: method must be {' or '.join(methods_where(soft_values=True))} (trees with soft values)")
    ft.search = search_params(ft.search or {}, f"{where}: search")
    if "lam" in ft.search:
        raise SDTError(f"{where}: search: lam comes from the experiment's search.lam (the flow must match it)")
    SearchConfig(**ft.search).validate()
    no_unknown(ft.amortize or {}, {f.name for f in dataclasses.fields(AmortizeConfig)}, f"{where}: amortize")
    AmortizeConfig(**(ft.amortize or {})).validate()
    return ft
