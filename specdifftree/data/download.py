"""The public datasets the package reads, where each is found, and `sdt data download`.

    DATASETS                       name -> Dataset (files with their source URL, size and sha256)
    select(names)                  the datasets that names ("ett", "m4", "all", ...) stand for
    where(file)                    the first data directory holding a file (shared/data, then the cache)
    data_file(rel, root)           the path a loader reads: root/rel, else a data directory's copy
    download(dataset, dest)        fetch a dataset's missing files into dest (default: the cache)

Files keep shared/data's layout (ett/ETTh1.csv, m4/Hourly-train.csv, har_chest_acc/1.csv,
ecg/100.hea), so a loader given either directory reads them the same way. URLs name the upstream
repositories at the commits shared/data's copies were read from (its README), so the sha256 of those
copies checks each download. ETTm1 and ETTm2, which shared/data lacks, are checked by the md5s
darts' dataset loaders publish for the same ETDataset files (darts' md5s of ETTh1 and ETTh2 equal
those of shared/data's copies). Files with neither checksum are fetched and kept unchecked, and
`sdt data list` says so.

Downloads go through pooch (temporary file, sha256 check, then an atomic move); the transfer itself
resumes a file's earlier partial download (`NAME.part`, an HTTP Range request) and shows a progress
bar on a terminal, one line per file otherwise.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from specdifftree.errors import SDTError, unknown_name
from specdifftree.paths import data_cache_dir, data_dirs


@dataclass(frozen=True)
class RemoteFile:
    path: str                # relative to a data directory: "ett/ETTh1.csv"
    url: str
    size: Optional[int]      # bytes; None where no copy was measured
    sha256: Optional[str]    # None where no copy was checked here
    md5: Optional[str] = None  # an upstream-published md5 where there is no sha256; neither: unchecked

    @property
    def checksum(self) -> Optional[tuple[str, str]]:
        """(algorithm, hex digest) a download is checked against, or None when none is known."""
        return ("sha256", self.sha256) if self.sha256 else ("md5", self.md5) if self.md5 else None


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    licence: str
    files: tuple[RemoteFile, ...]


_ETT = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/1d16c8f4f943005d613b5bc962e9eeb06058cf07/ETT-small/"
_M4 = "https://raw.githubusercontent.com/Mcompetitions/M4-methods/6c1067e5a57161249b17289a565178dc7a3fb3ca/Dataset/"
_HAR = ("https://raw.githubusercontent.com/lakshaymehra/Activity-Recognition-from-Single-Chest-Mounted-Accelerometer/"
        "92cb2844a2fcfbbdef7ed1a7f4679e847dd501e4/" + "/".join(
            ["Activity%20Recognition%20from%20Single%20Chest-Mounted%20Accelerometer"] * 2) + "/")
_WFDB = "https://raw.githubusercontent.com/MIT-LCP/wfdb-python/6850ad1aa0c1fcb2282b3625f767de98396cf740/sample-data/"

# (file name, bytes, sha256) per dataset; sizes of the files shared/data lacks are upstream's where known
_ETT_FILES = (
    ("ETTh1.csv", 2589657, "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066"),
    ("ETTh2.csv", 2417960, "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b"),
)
_ETT_MD5 = {"ETTm1.csv": "82d6bd89109c63d075d99c1077b33f38", "ETTm2.csv": "7687e47825335860bf58bccb31be0c56"}
_M4_FILES = {  # frequency: ((train bytes, sha256), (test bytes, sha256))
    "Hourly": ((2347115, "ea59b7783573c49077a835ab6465c7d66f1474783360f310988a9a737fbca62f"),
               (132820, "71a57fccb15e534d973626ada4fb87febf789e9317715b7cc6dd3b5f90db6f42")),
    "Daily": ((None, None), (576459, None)),
    "Weekly": ((4015067, None), (44247, None)),
    "Monthly": ((None, None), (None, None)),
    "Quarterly": ((None, None), (1971754, None)),
    "Yearly": ((None, None), (1486434, None)),
}
_HAR_FILES = (
    ("1.csv", 4031967, "517c3182b69294e9d5b402b47fa27baa7d912e1f55063c12e2fe866895d4dc29"),
    ("2.csv", 3348655, "94282f1b10cc77f85cae2ae9da5a644791505c63d861978f526368adc700d4a5"),
    ("3.csv", 2354163, "1caa47a160e33b24728c64fadfc6d807fbc83e1f6ecd0326c15d9f2f08e85bbc"),
    ("4.csv", 2908035, "d8ffa611da84fc99c0f53d75fb700f1e5cb9263fbca17be81a6e690be6055963"),
    ("5.csv", 3962245, "f7900e7ed9bfbaaa488514acafd96a09e5d8e13b04b066425c3cfbb3ec125784"),
    ("6.csv", 3429503, "e75c295681b5d73088709408421db4827fef53508529bfd239f2e132ada5aa91"),
)
_ECG_FILES = (
    ("100.hea", 166, "95fbdda0454fffae1a2dab1a5ac53e924ae97691c028cdd3ee82f2446b73c066"),
    ("100.dat", 1950000, "b2ea3c250e56e48f4b7b90697832b8ecd1afa1e0bb31f2dcfea4ed6e1075a639"),
    ("100.atr", 4558, "8d8a5349fb16638ebbf649f1779d12e96d91b736b2aafe59db43719ae583d471"),
    ("03700181.hea", 204, "46225ef9e8c0cf5a3110c3f1ac1b218ff4dd611f024863cc5480d6981e5f631b"),
    ("03700181.dat", 675000, "73053369fb56768e37d2165532d48f343d5fa9cbc6b550cba1c70ce3fd4fca41"),
    ("s0010_re.hea", 2687, "30d2d5db5b7b735f7dc39e5cf3e60a433a868b53d24587c9820cf51aa1729b87"),
    ("s0010_re.dat", 921600, "4e26a62c96e50eebd0eca7a11a4ad62ac8d7654e4de47acf2e0ce64be9565f20"),
    ("s0010_re.xyz", 230400, "0caffd208e17c5c597fb39c8416f85ce55726f3e8e9d5486a6331c9ec4451265"),
)
_M4_LICENCE = "no licence file; cite Makridakis et al., IJF 2020"


def _files(folder: str, base: str, table) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(f"{folder}/{name}", base + name, size, sha) for name, size, sha in table)


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("ett", "ETTh1, ETTh2 (hourly), ETTm1, ETTm2 (15-minute): transformer loads and oil temperature",
            "CC BY-ND 4.0 (ETDataset LICENSE); cite Zhou et al., AAAI 2021",
            _files("ett", _ETT, _ETT_FILES) + tuple(RemoteFile(f"ett/{name}", _ETT + name, None, None, md5)
                                                    for name, md5 in _ETT_MD5.items())),
    *(Dataset(f"m4-{freq.lower()}", f"M4 competition, {freq} series: train and test (wide CSV)", _M4_LICENCE,
              (RemoteFile(f"m4/{freq}-train.csv", f"{_M4}Train/{freq}-train.csv", *train),
               RemoteFile(f"m4/{freq}-test.csv", f"{_M4}Test/{freq}-test.csv", *test)))
      for freq, (train, test) in _M4_FILES.items()),
    Dataset("har_chest_acc", "chest-mounted accelerometer, participants 1-6 (UCI, Casale 2013), 52 Hz",
            "no licence file upstream (UCI lists CC BY 4.0); cite Casale et al., 2012",
            _files("har_chest_acc", _HAR, _HAR_FILES)),
    Dataset("ecg", "PhysioNet records from wfdb-python's sample data: MIT-BIH 100 (with beats), MIMIC 03700181, "
            "PTB s0010_re", "ODC-By 1.0 (PhysioNet); cite Goldberger et al., Circulation 2000",
            _files("ecg", _WFDB, _ECG_FILES)),
)}


def select(names: Iterable[str]) -> list[Dataset]:
    """The datasets `names` stand for, in table order: a dataset's name, "m4" (every frequency) or "all"."""
    chosen: set[str] = set()
    for name in names:
        hits = [k for k in DATASETS if name == "all" or k == name or k.startswith(f"{name}-")]
        if not hits:
            raise unknown_name("dataset", name, [*DATASETS, "m4", "all"])
        chosen.update(hits)
    return [d for k, d in DATASETS.items() if k in chosen]


def where(file: RemoteFile) -> Optional[Path]:
    """The first data directory's copy of `file` (shared/data, then the cache), or None."""
    return next((d / file.path for d in data_dirs() if (d / file.path).is_file()), None)


def data_file(rel: str | Path, root: Optional[Path] = None) -> Path:
    """The file a loader reads for `rel` (a path in shared/data's layout): root/rel where it exists,
    else the first data directory's copy, else root/rel (or the cache's path), for the loader to
    report as missing with `sdt data download NAME` named when the file is one of ours."""
    rel = Path(rel)
    if rel.is_absolute():
        return rel
    for d in ([root] if root is not None else []) + data_dirs():
        if (d / rel).is_file():
            return d / rel
    known = next((n for n, d in DATASETS.items() for f in d.files if f.path == rel.as_posix()), None)
    if known is not None:
        raise SDTError(f"{rel} is in no data directory ({', '.join(map(str, data_dirs()))}); "
                       f"`sdt data download {known}` fetches it")
    return (root if root is not None else data_cache_dir()) / rel


def download(dataset: Dataset, dest: Optional[Path] = None, log: Callable[[str], None] = print) -> list[Path]:
    """Fetch the files of `dataset` that `dest` (default: the cache, paths.data_cache_dir()) lacks or
    holds with another checksum; returns every file's path. SDTError, one line, when a file cannot be
    fetched (naming its URL and where to place it by hand) or its checksum differs from the table's."""
    import pooch

    dest = Path(dest) if dest is not None else data_cache_dir()
    pooch.get_logger().setLevel("WARNING")  # pooch logs each download and unknown hash at INFO
    out = []
    for f in dataset.files:
        target = dest / f.path
        alg, digest = f.checksum or (None, None)
        if target.is_file() and (alg is None or pooch.file_hash(str(target), alg=alg) == digest):
            out.append(target)
            continue
        start = time.monotonic()
        try:
            pooch.retrieve(f.url, f"{alg}:{digest}" if alg else None, fname=target.name, path=target.parent,
                           downloader=_resuming(target.with_name(target.name + ".part"), f))
        except ValueError:  # pooch's hash mismatch; the downloaded bytes are already deleted
            raise SDTError(f"{f.url}: the download's {alg} is not {digest}; nothing was kept "
                           f"(a changed upstream file, or a proxy rewrote it)") from None
        except OSError as e:  # requests' errors are OSErrors: no network, refused, HTTP status
            raise SDTError(f"cannot download {f.url} ({_reason(e)}); place the file by hand at {target}"
                           + (f" ({alg} {digest})" if alg else "")) from None
        log(f"{f.path}: {target.stat().st_size:,} bytes in {time.monotonic() - start:.1f}s"
            + ("" if alg else " (no checksum known: kept unchecked)"))
        out.append(target)
    return out


def _resuming(part: Path, f: RemoteFile):
    """A pooch downloader that appends to `part` from where an earlier try stopped (HTTP Range),
    then hands the complete bytes to pooch's temporary file for the checksum."""

    def fetch(url: str, output_file: str, _pooch=None, check_only: bool = False):
        import requests
        from tqdm import tqdm

        have = part.stat().st_size if part.is_file() else 0
        with requests.get(url, headers={"Range": f"bytes={have}-"} if have else {}, stream=True, timeout=30) as r:
            if r.status_code != 416:  # 416: the part is already whole
                r.raise_for_status()
                if r.status_code != 206:  # the server ignored the range: start over
                    have = 0
                total = have + int(r.headers.get("content-length", 0)) or f.size
                with part.open("ab" if have else "wb") as out, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, desc=f.path, leave=False,
                        disable=not sys.stderr.isatty()) as bar:
                    for chunk in r.iter_content(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
        os.replace(part, output_file)

    return fetch


def _reason(e: OSError) -> str:
    """A few words on why a request failed (requests' own messages run to several lines)."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    return "no connection" if "Connection" in type(e).__name__ else type(e).__name__


__all__ = ["DATASETS", "Dataset", "RemoteFile", "data_file", "download", "select", "where"]
