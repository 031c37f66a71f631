"""The package as pip installs it: a wheel carries the presets and experiment files and works from
outside the repository; the core requirements compile nothing (llama.cpp is the [gguf] extra); without
that extra, `gguf:` priors and `sdt export-gguf` end in one line naming it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NATIVE_SOURCE_ONLY = {"llama-cpp-python", "gguf"}  # gguf is pure Python, but exists only to serve llama.cpp


def core_requirements(requires: list[str]) -> list[str]:
    """Requires-Dist entries that hold without extras, as normalised names."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out = []
    for text in requires:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(canonicalize_name(req.name))
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel --no-deps` builds from a copy of the working tree (no network, no stale build/)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "runs", "wandb", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True, text=True)
    [whl] = (tmp / "dist").glob("specdifftree-*.whl")
    return whl


@pytest.mark.slow
def test_the_wheel_finds_presets_and_experiments_from_outside_the_repository(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "specdifftree/configs/search/forecast.yaml" in names
    assert "specdifftree/configs/train/smoke.yaml" in names
    assert "specdifftree/experiments/suites/sadt_table.yaml" in names
    # a fresh environment that sees this one's packages (as --system-site-packages would), not its editable install
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, text=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=outside, capture_output=True, text=True, timeout=300)

    where = run(str(python), "-c", "import specdifftree.paths as p; print(p.configs_dir())")
    assert where.returncode == 0 and where.stdout.strip().startswith(str(venv)), where.stderr
    helped = run(str(venv / "bin" / "sdt"), "search", "--preset", "forecast", "--help")
    assert helped.returncode == 0 and "--preset" in helped.stdout, helped.stderr
    loaded = run(str(python), "-c", "from specdifftree.experiments.config import load_experiment; "
                 "c = load_experiment('experiments/sadt_table.yaml', 'smoke'); print(c.preset, c.source)")
    assert loaded.returncode == 0, loaded.stderr
    preset, source = loaded.stdout.split()
    assert preset == "smoke" and source.startswith(str(venv))
    train = run(str(python), "-c", "from specdifftree.train.config import TrainConfig; TrainConfig.from_name('smoke')")
    assert train.returncode == 0, train.stderr


@pytest.mark.slow
def test_core_requirements_compile_nothing(wheel):
    """Without extras, no llama.cpp, and every distribution the core pulls in (transitively, as
    installed here) came from a published wheel: pure Python or a manylinux/musllinux/macOS/Windows
    build, never a `linux_*` wheel that pip compiled from an sdist."""
    from packaging.utils import canonicalize_name

    meta = zipfile.ZipFile(wheel).read(next(n for n in zipfile.ZipFile(wheel).namelist()
                                            if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = core_requirements(requires)
    assert not NATIVE_SOURCE_ONLY & set(core)
    assert "Provides-Extra: gguf" in meta
    todo, seen, built_here = list(core), set(), []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement whose marker excludes this platform
        wheel_file = dist.read_text("WHEEL") or ""
        tags = [line.split(":", 1)[1].strip() for line in wheel_file.splitlines() if line.startswith("Tag:")]
        if any("-linux_" in t for t in tags):  # manylinux_* and none-any tags do not match
            built_here.append(f"{name} ({', '.join(tags)})")
        todo.extend(core_requirements(dist.requires or []))
    assert not built_here, f"compiled locally: {built_here}"
    assert canonicalize_name("torch") in seen and len(seen) > 20


@pytest.mark.parametrize("args,module", [
    (["export-gguf", "{tmp}", "--out", "{tmp}/x.gguf"], "gguf"),
    (["search", "--prior", "gguf:{tmp}/x.gguf", "--method", "greedy", "--reward", "format", "--horizon", "4"], "llama_cpp"),
])
def test_without_the_gguf_extra_one_line_names_it(args, module, run_cli, tmp_path, monkeypatch):
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, module, None)  # `import MODULE` now raises ImportError
    code, _, err = run_cli([a.format(tmp=tmp_path) for a in args])
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: ") and "pip install 'specdifftree[gguf]'" in err
