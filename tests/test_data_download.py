"""`sdt data` (data/download.py) against a file server on 127.0.0.1: the cache layout, the sha256
check, a resumed partial download, and the one-line error when the source cannot be reached."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from specdifftree.data import download as dl
from specdifftree.errors import SDTError

CONTENT = b"date,OT\n" + b"".join(b"2016-07-01 %02d:00:00,%d.5\n" % (h, h) for h in range(24))


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the test's folder; honours `Range: bytes=N-` (http.server does not) and records requests."""

    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.seen.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """(base URL, served folder, requests seen) of a file server in a thread."""
    root = tmp_path / "served"
    (root / "ETT-small").mkdir(parents=True)
    (root / "ETT-small" / "ETTh1.csv").write_bytes(CONTENT)
    RangeHandler.seen = []
    handler = lambda *a, **k: RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root, RangeHandler.seen
    httpd.shutdown()
    httpd.server_close()


def one_file(url: str, sha256: str | None) -> dl.Dataset:
    return dl.Dataset("ett", "test", "test", (dl.RemoteFile("ett/ETTh1.csv", url, len(CONTENT), sha256),))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_checks_the_sha256_and_keeps_shared_data_layout(server, tmp_path):
    base, _, seen = server
    ds = one_file(base + "ETT-small/ETTh1.csv", hashlib.sha256(CONTENT).hexdigest())
    [path] = dl.download(ds, tmp_path / "cache", log=lambda m: None)
    assert path == tmp_path / "cache" / "ett" / "ETTh1.csv" and path.read_bytes() == CONTENT
    assert sorted(p.name for p in path.parent.iterdir()) == ["ETTh1.csv"]  # no .part or temporary left
    dl.download(ds, tmp_path / "cache", log=lambda m: None)
    assert len(seen) == 1  # a verified copy is not fetched again


def test_a_checksum_mismatch_is_an_error_and_nothing_is_kept(server, tmp_path):
    base, _, _ = server
    ds = one_file(base + "ETT-small/ETTh1.csv", "0" * 64)
    with pytest.raises(SDTError, match="sha256 is not 0000") as e:
        dl.download(ds, tmp_path / "cache", log=lambda m: None)
    assert "\n" not in str(e.value)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_an_upstream_md5_checks_files_without_a_sha256(server, tmp_path):
    base, _, seen = server
    good = dl.RemoteFile("ett/ETTm1.csv", base + "ETT-small/ETTh1.csv", None, None, hashlib.md5(CONTENT).hexdigest())
    [path] = dl.download(dl.Dataset("ett", "test", "test", (good,)), tmp_path / "a", log=lambda m: None)
    assert path.read_bytes() == CONTENT
    bad = dl.RemoteFile("ett/ETTm1.csv", good.url, None, None, "0" * 32)
    with pytest.raises(SDTError, match="md5 is not 0000"):
        dl.download(dl.Dataset("ett", "test", "test", (bad,)), tmp_path / "b", log=lambda m: None)


def test_every_ett_file_is_checked():
    assert all(f.checksum is not None for f in dl.DATASETS["ett"].files)


def test_a_partial_download_resumes_with_a_range_request(server, tmp_path):
    base, _, seen = server
    part = tmp_path / "cache" / "ett" / "ETTh1.csv.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(CONTENT[:100])
    [path] = dl.download(one_file(base + "ETT-small/ETTh1.csv", hashlib.sha256(CONTENT).hexdigest()),
                         tmp_path / "cache", log=lambda m: None)
    assert path.read_bytes() == CONTENT and not part.exists()
    assert seen == [("/ETT-small/ETTh1.csv", "bytes=100-")]


def test_offline_the_cli_says_which_url_and_where_to_place_the_file(run_cli, tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/ETT-small/ETTh1.csv"
    monkeypatch.setitem(dl.DATASETS, "ett", one_file(url, None))
    monkeypatch.setenv("SDT_DATA_DIR", str(tmp_path / "cache"))
    code, out, err = run_cli(["data", "download", "ett"])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: cannot download {url} (no connection)")
    assert f"place the file by hand at {tmp_path / 'cache' / 'ett' / 'ETTh1.csv'}" in err


def test_cli_downloads_into_the_cache_and_lists_where_each_dataset_is(run_cli, server, tmp_path, monkeypatch):
    base, _, _ = server
    monkeypatch.setitem(dl.DATASETS, "ett", one_file(base + "ETT-small/ETTh1.csv", hashlib.sha256(CONTENT).hexdigest()))
    monkeypatch.setenv("SDT_DATA_DIR", str(tmp_path / "cache"))
    code, out, err = run_cli(["data", "download", "ett"])
    assert code == 0, err
    assert (tmp_path / "cache" / "ett" / "ETTh1.csv").read_bytes() == CONTENT
    code, out, _ = run_cli(["data", "list"])
    assert code == 0 and f"downloads go to {tmp_path / 'cache'}" in out
    code, _, err = run_cli(["data", "download", "etx"])
    assert code == 2 and "Did you mean 'ett'?" in err


def test_loaders_read_shared_data_first_then_the_cache(tmp_path, monkeypatch):
    from specdifftree import paths

    cache = tmp_path / "cache"
    monkeypatch.setenv("SDT_DATA_DIR", str(cache))
    shared = paths.shared_data_dir()
    assert paths.data_dirs() == [d for d in (shared, cache) if d is not None]
    (cache / "ett").mkdir(parents=True)
    (cache / "ett" / "ETTm1.csv").write_bytes(CONTENT)
    assert dl.data_file("ett/ETTm1.csv", root=shared) == cache / "ett" / "ETTm1.csv"
    if shared is not None:
        assert dl.data_file("ett/ETTh1.csv") == shared / "ett" / "ETTh1.csv"
    with pytest.raises(SDTError, match="`sdt data download ett` fetches it"):
        dl.data_file("ett/ETTm2.csv")
    assert {d.name for d in dl.select(["m4"])} == {n for n in dl.DATASETS if n.startswith("m4-")}
