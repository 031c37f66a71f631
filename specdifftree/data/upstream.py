"""Loaders for the official OpenTSLM curriculum data. They need the network on first use; the
offline builders (`data/stages.py`) are the default.

| stage             | upstream data                          | where from                                        |
|-------------------|----------------------------------------|---------------------------------------------------|
| stage1_mcq        | TSQA                                   | Hugging Face hub, dataset `ChengsenWang/TSQA`     |
| stage2_captioning | M4 caption dataset (Monthly, Quarterly, Weekly) | ARCHIVES["m4_captions"] (zip)            |
| stage3_cot        | HAR CoT (train / val / test CSVs)      | ARCHIVES["har_cot"] (zip)                         |
| stage4_sleep_cot  | SleepEDF CoT (one CSV)                 | ARCHIVES["sleep_cot"] (plain CSV)                 |
| stage5_ecg_cot    | ECG-QA CoT CSVs + PTB-XL records500    | ARCHIVES["ecg_qa_cot"] (tar.gz), ARCHIVES["ptbxl"] (zip) |

Downloads go to `sdt_home()/upstream/<name>/files` (downloaded to a temporary name, unpacked
into a temporary folder, then renamed, so a killed download leaves nothing half-done behind).
An unreachable host gives a one-line SDTError.

File formats (as OpenTSLM reads them):
- TSQA: records with `Task`, `Question`, `Answer`, `Series` (a JSON list, or its text), and
  optionally `Label`, `Size`; stored as JSON (a list), JSON lines, CSV or Parquet.
- M4 captions: `m4_series_<Freq>.csv` (`id`, `series` = JSON list) and `m4_captions_<Freq>.csv`
  (`id`, `caption`), joined on `id`.
- HAR CoT: `har_cot_{train,val,test}_cot.csv` with `x_axis`, `y_axis`, `z_axis` (list text),
  `label`, `rationale`; repeated header rows inside the file are skipped.
- SleepEDF CoT: `sleep_cot.csv` with `time_series` (text of a [[...]] list: one EEG channel),
  `label`, `rationale`.
- ECG-QA CoT: `ecg_qa_cot_{train,val,test}.csv` with `question`, `answer`, `template_id`,
  `question_type`, `clinical_context`, `rationale`, `ecg_id` ("[12345]"); the signal is the
  PTB-XL record `records500/<ecg_id // 1000 * 1000:05d>/<ecg_id:05d>_hr` (12 leads, 500 Hz),
  downsampled to 100 Hz.
Splits: HAR CoT and ECG-QA CoT ship their own; TSQA, M4 captions and SleepEDF CoT are one pool,
split here 80/10/10 by a hash of the row's id (`hash_split`).
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence
from urllib.parse import urlparse

import numpy as np

from specdifftree.data.example import STAGES, Example
from specdifftree.data.series import check_series
from specdifftree.data.sources import MIN_POINTS, error_line, read_wfdb
from specdifftree.errors import SDTError
from specdifftree.paths import sdt_home

TSQA_REPO = "ChengsenWang/TSQA"
MAX_POINTS = 4096  # longest series handed to the encoder (EncoderConfig().max_len); longer ones are averaged down


@dataclass(frozen=True)
class Archive:
    url: str
    filename: str  # the downloaded file; .zip and .tar.gz are unpacked, anything else is kept as is


ARCHIVES = {
    "m4_captions": Archive("https://polybox.ethz.ch/index.php/s/QxLJwrWPBSZm8Y5/download/M4TimeSeriesCaptionDatasetv01.zip",
                           "M4TimeSeriesCaptionDatasetv01.zip"),
    "har_cot": Archive("https://polybox.ethz.ch/index.php/s/kD74GnMYxn3HBEM/download", "har_cot.zip"),
    "sleep_cot": Archive("https://polybox.ethz.ch/index.php/s/ZryWSdCFJZ9JR3R/download", "sleep_cot.csv"),
    "ecg_qa_cot": Archive("https://polybox.ethz.ch/index.php/s/FJfRg5eKHjzjik5/download/ecg_qa_cot.tar.gz",
                          "ecg_qa_cot.tar.gz"),
    "ptbxl": Archive("https://physionet-open.s3.amazonaws.com/ptb-xl/ptb-xl-1.0.3.zip", "ptb-xl-1.0.3.zip"),
}
HAR_COT_LABELS = ("biking", "lying", "running", "sitting", "standing", "walking", "walking_down", "walking_up")
SLEEP_COT_LABELS = ("Wake", "Non-REM stage 1", "Non-REM stage 2", "Non-REM stage 3", "REM sleep", "Movement")
_SPLIT_FILES = {"train": "train", "val": "val", "test": "test"}
_COT_POST = "Rationale:"
_PY_NONFINITE = re.compile(r"(?<![A-Za-z])(nan|inf)(?![A-Za-z])")


# --------------------------------------------------------------------------- entry point


def load_upstream(stage: str, split: str, n: Optional[int] = None, seed: int = 0,
                  max_points: int = MAX_POINTS, timeout: float = 60.0) -> list[Example]:
    """Examples of `stage` / `split` ("train", "val", "test") from the official data, downloading
    it on first use; n None: all of them, else a seeded sample of min(n, available)."""
    if stage not in STAGES:
        raise SDTError(f"unknown stage '{stage}' (choose from {', '.join(STAGES)})")
    if split not in _SPLIT_FILES:
        raise SDTError(f"unknown split '{split}' (choose from train, val, test)")
    rng = np.random.default_rng([seed, zlib.crc32(f"{stage}/{split}".encode())])
    if stage == "stage1_mcq":
        examples = [e for e in parse_tsqa(fetch_tsqa(timeout=timeout)) if hash_split(e.meta["id"]) == split]
    elif stage == "stage2_captioning":
        examples = [e for e in parse_m4_captions(fetch("m4_captions", timeout)) if hash_split(e.meta["id"]) == split]
    elif stage == "stage3_cot":
        examples = parse_har_cot(find_file(fetch("har_cot", timeout), f"har_cot_{_SPLIT_FILES[split]}_cot.csv"))
    elif stage == "stage4_sleep_cot":
        csv_path = find_file(fetch("sleep_cot", timeout), "sleep_cot.csv")
        examples = [e for e in parse_sleep_cot(csv_path) if hash_split(e.meta["id"]) == split]
    elif stage == "stage5_ecg_cot":
        csv_path = find_file(fetch("ecg_qa_cot", timeout), f"ecg_qa_cot_{_SPLIT_FILES[split]}.csv")
        ptbxl = find_file(fetch("ptbxl", timeout), "ptbxl_database.csv").parent
        return parse_ecg_qa_cot(csv_path, ptbxl, n=n, rng=rng)
    else:
        raise SDTError("stage6_forecast has no upstream archive: it reads M4 and ETT from the data directory")
    if n is not None and n < len(examples):
        examples = [examples[k] for k in sorted(rng.choice(len(examples), n, replace=False))]
    for e in examples:
        e.series = [shorten(x, max_points) for x in e.series]
    return examples


def hash_split(key: str) -> str:
    """"train" (80%), "val" (10%) or "test" (10%), fixed by a CRC32 of the key."""
    bucket = zlib.crc32(str(key).encode()) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def shorten(x: np.ndarray, max_points: int) -> np.ndarray:
    """x [T] averaged over blocks of ceil(T / max_points) points when T > max_points.  -> [<= max_points]"""
    x = np.asarray(x, dtype=np.float64)
    k = -(-len(x) // max_points)
    if k <= 1:
        return x
    cut = len(x) // k * k
    return x[:cut].reshape(-1, k).mean(axis=1)


# --------------------------------------------------------------------------- downloads


def upstream_home() -> Path:
    return sdt_home() / "upstream"


def fetch(name: str, timeout: float = 60.0) -> Path:
    """The folder holding archive `name`'s files (ARCHIVES), downloaded and unpacked on first use."""
    arch = ARCHIVES[name]
    root = upstream_home() / name
    files = root / "files"
    if files.is_dir():
        return files
    root.mkdir(parents=True, exist_ok=True)
    download = root / arch.filename
    if not download.is_file():
        _download(arch.url, download, name, timeout)
    tmp = root / f"files.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _unpack(download, tmp)
        os.replace(tmp, files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if download.exists():
        download.unlink()
    return files


def fetch_tsqa(timeout: float = 60.0, endpoint: Optional[str] = None) -> list[Path]:
    """The data files of the TSQA dataset repository on the hub (cached under upstream_home())."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.jsonl", "*.csv", "*.parquet"]
    try:
        folder = snapshot_download(TSQA_REPO, repo_type="dataset", allow_patterns=patterns, etag_timeout=timeout,
                                   cache_dir=upstream_home() / "hub", endpoint=endpoint)
    except Exception as e:  # noqa: BLE001 (offline, unreachable, missing repo: all one message for the user)
        host = urlparse(endpoint or "https://huggingface.co").hostname
        raise SDTError(f"cannot download the TSQA dataset ({TSQA_REPO}) from {host}: {error_line(e)}; "
                       "connect to the network, or train on the offline data (the default)") from None
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".csv", ".parquet"))
    if not paths:
        raise SDTError(f"the TSQA download in {folder} holds no data file (.json, .jsonl, .csv, .parquet)")
    return paths


def _download(url: str, dest: Path, name: str, timeout: float) -> None:
    """url -> dest, through dest.part-<pid> and a rename; SDTError when the host cannot be reached."""
    from specdifftree.progress import progress

    part = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as f:
            total = int(response.headers.get("content-length") or 0) or None
            with progress(total, f"downloading {name}", "B", leave=True) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
        os.replace(part, dest)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", None) or e
        raise SDTError(f"cannot download {name} from {urlparse(url).hostname} ({error_line(reason)}); "
                       "connect to the network, or train on the offline data (the default)") from None
    finally:
        part.unlink(missing_ok=True)


def _unpack(path: Path, into: Path) -> None:
    """Unpack a .zip or .tar.gz into `into` (members may not leave it); copy any other file there."""
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    if not (into / member).resolve().is_relative_to(into.resolve()):
                        raise SDTError(f"{path}: member '{member}' would unpack outside {into}")
                z.extractall(into)
        elif path.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(path, "r:gz") as t:
                t.extractall(into, filter="data")
        else:
            shutil.copy2(path, into / path.name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        path.unlink(missing_ok=True)
        raise SDTError(f"{path}: damaged archive ({error_line(e)}); it was removed, run again to download it anew") from None


def find_file(root: Path, name: str) -> Path:
    """The file called `name` anywhere under root (the first in sorted order)."""
    hits = sorted(root.rglob(name))
    if not hits:
        raise SDTError(f"{name} not found under {root}; delete {root.parent} to download it again")
    return hits[0]


# --------------------------------------------------------------------------- parsers


def parse_tsqa(paths: Sequence[Path]) -> list[Example]:
    """stage1_mcq examples from TSQA files: pre-prompt = Question, post-prompt = "Predict the
    <Task> Answer:", answer = Answer (as OpenTSLM's TSQADataset)."""
    out = []
    for path in paths:
        for where, row in _records(Path(path)):
            _require(path, where, row, ("Task", "Question", "Answer", "Series"))
            x = parse_series(row["Series"], path, where, "Series")
            out.append(Example(
                stage="stage1_mcq", series=[x], names=["This is the time series"],
                pre_prompt=str(row["Question"]).strip(), post_prompt=f"Predict the {row['Task']} Answer:",
                answer=str(row["Answer"]).strip(),
                meta={"source": f"TSQA:{Path(path).name}:{where}", "id": f"{Path(path).name}:{where}",
                      "task": str(row["Task"]), "label": row.get("Label")}))
    return out


def parse_m4_captions(root: Path) -> list[Example]:
    """stage2_captioning examples from every m4_series_<Freq>.csv under root joined with its
    m4_captions_<Freq>.csv on `id`."""
    out = []
    for series_csv in sorted(root.rglob("m4_series_*.csv")):
        freq = series_csv.stem.removeprefix("m4_series_")
        captions_csv = series_csv.with_name(f"m4_captions_{freq}.csv")
        if not captions_csv.is_file():
            raise SDTError(f"{captions_csv} not found (it should sit next to {series_csv.name})")
        captions = {row["id"]: row["caption"] for _, row in _csv_rows(captions_csv, ("id", "caption"))}
        for line, row in _csv_rows(series_csv, ("id", "series")):
            if row["id"] not in captions:
                continue
            x = parse_series(row["series"], series_csv, line, "series")
            out.append(Example(
                stage="stage2_captioning", series=[x], names=["This is the time series"],
                pre_prompt="You are an expert in time series analysis.",
                post_prompt="Please generate a detailed caption for this time-series, describing it as accurately as possible.",
                answer=captions[row["id"]].strip(),
                meta={"source": f"M4-captions:{row['id']}", "id": row["id"], "frequency": freq}))
    if not out:
        raise SDTError(f"no M4 caption pairs (m4_series_<Freq>.csv + m4_captions_<Freq>.csv) under {root}")
    return out


def parse_har_cot(csv_path: Path) -> list[Example]:
    """stage3_cot examples from a HAR CoT CSV (three accelerometer axes, label, rationale)."""
    pre = ("You are given accelerometer data in all three dimensions. Classify the activity. Reason "
           "step by step in one paragraph and name no label before the last sentence. Possible activity "
           f"labels are: {', '.join(HAR_COT_LABELS)}. End your response with \"Answer: <label>\".")
    return _cot_examples(csv_path, "stage3_cot", [f"{a}_axis" for a in "xyz"],
                         [f"The following is the accelerometer data on the {a}-axis" for a in "xyz"], pre,
                         HAR_COT_LABELS, "HAR-CoT", skip_header_rows=True)


def parse_sleep_cot(csv_path: Path) -> list[Example]:
    """stage4_sleep_cot examples from sleep_cot.csv (one EEG channel per row, label, rationale)."""
    pre = ("You are given a 30-second EEG time series segment. Classify the sleep stage. Reason step by "
           "step in one paragraph and reveal the class only at the end. Possible sleep stages are: "
           f"{', '.join(SLEEP_COT_LABELS)}. End your response with \"Answer: <stage>\".")
    return _cot_examples(csv_path, "stage4_sleep_cot", ["time_series"], ["The following is the EEG time series"],
                         pre, SLEEP_COT_LABELS, "SleepEDF-CoT")


def _cot_examples(csv_path: Path, stage: str, columns: list[str], names: list[str], pre: str,
                  options: tuple[str, ...], source: str, skip_header_rows: bool = False) -> list[Example]:
    """One CoT example per row: the series in `columns`, answer = `rationale`, label = `label`."""
    out = []
    for line, row in _csv_rows(csv_path, (*columns, "label", "rationale"), skip_header_rows=skip_header_rows):
        out.append(Example(
            stage=stage, series=[parse_series(row[c], csv_path, line, c) for c in columns], names=names,
            pre_prompt=pre, post_prompt=_COT_POST, answer=row["rationale"].strip(), label=row["label"].strip(),
            options=options, meta={"source": f"{source}:{csv_path.name}:{line}", "id": f"{csv_path.name}:{line}"}))
    return out


def parse_ecg_qa_cot(csv_path: Path, ptbxl_root: Path, n: Optional[int] = None,
                     rng: Optional[np.random.Generator] = None) -> list[Example]:
    """stage5_ecg_cot examples from an ECG-QA CoT CSV, the signals read from the PTB-XL records
    under ptbxl_root (12 leads at 500 Hz, downsampled to 100 Hz). n: a sample of the rows (drawn
    with rng) before any record is read."""
    from scipy.signal import resample_poly

    rows = list(_csv_rows(csv_path, ("question", "answer", "question_type", "rationale", "ecg_id")))
    if n is not None and n < len(rows):
        rng = rng if rng is not None else np.random.default_rng(0)
        rows = [rows[k] for k in sorted(rng.choice(len(rows), n, replace=False))]
    out = []
    for line, row in rows:
        try:
            ecg_id = int(str(row["ecg_id"]).strip().strip("[]").split(",")[0])
        except ValueError:
            raise SDTError(f"{csv_path}: row {line}, column ecg_id: '{row['ecg_id']}' is not an ECG id") from None
        record = read_wfdb(ptbxl_root / "records500" / f"{ecg_id // 1000 * 1000:05d}" / f"{ecg_id:05d}_hr")
        leads = [resample_poly(record.signals[:, c], 1, 5) if record.fs == 500 else record.signals[:, c]
                 for c in range(record.signals.shape[1])]
        context = (row.get("clinical_context") or "").strip() or "12-lead ECG recording."
        out.append(Example(
            stage="stage5_ecg_cot", series=leads, names=[f"The ECG lead {name}" for name in record.leads],
            pre_prompt=(f"You are an expert cardiologist analyzing an ECG.\nClinical context: {context}\n"
                        f"Question: {row['question'].strip()}\nReason step by step in one paragraph, then end "
                        "your response with \"Answer: <answer>\"."),
            post_prompt=_COT_POST, answer=row["rationale"].strip(), label=row["answer"].strip(),
            meta={"source": f"ECG-QA-CoT:{csv_path.name}:{line}", "id": f"{csv_path.name}:{line}",
                  "ecg_id": ecg_id, "question_type": row["question_type"], "template_id": row.get("template_id")}))
    return out


def parse_series(cell, path: Path, where, column: str) -> np.ndarray:
    """A series from a cell: a list, or the text of a list ("[1.0, 2.0]", JSON or Python repr), also
    [[...]] with one row. SDTError naming file, row and column when it is not a finite series
    of at least MIN_POINTS values.  -> [T]"""
    value = cell
    if isinstance(cell, str):
        text = _PY_NONFINITE.sub(lambda m: {"nan": "NaN", "inf": "Infinity"}[m.group(1)], cell)
        try:
            value = json.loads(text)  # JSON lists, and Python list text (nan / inf written by repr)
        except ValueError:
            raise SDTError(f"{path}: row {where}, column {column}: not a list of numbers "
                           f"('{cell.strip()[:40]}')") from None
    try:
        x = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SDTError(f"{path}: row {where}, column {column}: not a list of numbers") from None
    return check_series(x[0] if x.ndim == 2 and x.shape[0] == 1 else x, f"{path}: row {where}, column {column}",
                        MIN_POINTS)


# --------------------------------------------------------------------------- file readers


def _csv_rows(path: Path, required: Sequence[str], skip_header_rows: bool = False) -> Iterator[tuple[int, dict]]:
    """(file line, row dict) of a CSV with a header; an SDTError when a required column is missing."""
    path = Path(path)
    if not path.is_file():
        raise SDTError(f"file not found: {path}")
    csv.field_size_limit(2**31 - 1)  # series are stored as long list strings
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise SDTError(f"{path}: row 1: missing column(s) {', '.join(missing)} (columns: {', '.join(header)})")
        for row in reader:
            if skip_header_rows and row.get(required[0]) == required[0]:
                continue
            yield reader.line_num, row


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    """(row number, record) of a .json (a list, or a dict holding one list), .jsonl, .csv or .parquet file."""
    if path.suffix == ".csv":
        yield from _csv_rows(path, ())
        return
    if path.suffix == ".parquet":
        try:
            import pandas as pd

            frame = pd.read_parquet(path)
        except ImportError:
            raise SDTError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        yield from ((i + 1, dict(r)) for i, r in enumerate(frame.to_dict("records")))
        return
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield i, _json(path, i, line)
        return
    data = _json(path, 1, text)
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else None
    if not isinstance(data, list):
        raise SDTError(f"{path}: expected a JSON list of records")
    yield from enumerate(data, start=1)


def _json(path: Path, where: int, text: str):
    try:
        return json.loads(text)
    except ValueError as e:
        raise SDTError(f"{path}: row {where}: not valid JSON ({error_line(e)})") from None


def _require(path: Path, where, row, keys: Sequence[str]) -> None:
    if not isinstance(row, dict):
        raise SDTError(f"{path}: row {where}: expected a record with {', '.join(keys)}")
    missing = [k for k in keys if k not in row]
    if missing:
        raise SDTError(f"{path}: row {where}: missing field(s) {', '.join(missing)}")
