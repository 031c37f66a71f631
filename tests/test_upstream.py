"""Upstream loaders (data/upstream.py) on small fixtures written in the upstream file formats,
the download / unpack path through file:// URLs, and the unreachable-host message."""

import csv
import io
import json
import tarfile
import time
import zipfile

import numpy as np
import pytest

from specdifftree.data import upstream
from specdifftree.data.stages import build_stage, parse_label
from specdifftree.errors import SDTError


@pytest.fixture(autouse=True)
def sdt_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SDT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _csv(path, header, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _lst(n, seed=0, scale=1.0):
    return [round(float(v), 4) for v in np.random.default_rng(seed).normal(0, scale, n)]


# --------------------------------------------------------------------------- fixtures in upstream formats


def _har_cot_csv(path, n=4):
    rows = [[str(_lst(40, i)), str(_lst(40, i + 10)), str(_lst(40, i + 20)), label,
             f"The signal shows steady periodic motion. Answer: {label}"]
            for i, label in zip(range(n), ["walking", "sitting", "biking", "walking_up"] * n)]
    rows.insert(2, ["x_axis", "y_axis", "z_axis", "label", "rationale"])  # upstream quirk: repeated header row
    return _csv(path, ["x_axis", "y_axis", "z_axis", "label", "rationale"], rows)


def _sleep_cot_csv(path, n=12):
    labels = ["Wake", "Non-REM stage 2", "REM sleep"]
    rows = [[str([_lst(300, i)]), labels[i % 3], f"Slow waves dominate the epoch. Answer: {labels[i % 3]}"]
            for i in range(n)]
    return _csv(path, ["time_series", "label", "rationale"], rows)


def _ptbxl(root, ecg_ids=(1, 1002)):
    import wfdb

    root.mkdir(parents=True, exist_ok=True)
    (root / "ptbxl_database.csv").write_text("ecg_id,patient_id\n" + "".join(f"{i},1\n" for i in ecg_ids))
    leads = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    for i in ecg_ids:
        folder = root / "records500" / f"{i // 1000 * 1000:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        sig = np.random.default_rng(i).normal(0, 0.2, (1000, 12))
        wfdb.wrsamp(f"{i:05d}_hr", fs=500, units=["mV"] * 12, sig_name=leads, p_signal=sig, fmt=["16"] * 12,
                    write_dir=str(folder))
    return root


def _ecg_qa_cot_csv(path, ecg_ids=(1, 1002)):
    rows = [["Does this ECG show atrial fibrillation?", "no", 1, "single-verify", "67-year-old male patient.",
             "The rhythm is regular with visible P waves. Answer: no", f"[{i}]"] for i in ecg_ids]
    return _csv(path, ["question", "answer", "template_id", "question_type", "clinical_context", "rationale",
                       "ecg_id"], rows)


# --------------------------------------------------------------------------- parsers


def test_parse_tsqa_json_jsonl_csv(tmp_path):
    rec = {"Task": "Trend", "Size": 64, "Question": "What is the trend? (a) up (b) down", "Answer": "(a) up",
           "Label": "a", "Series": json.dumps(_lst(64))}
    (tmp_path / "a.json").write_text(json.dumps([rec, dict(rec, Series=_lst(32, 1))]))
    (tmp_path / "b.jsonl").write_text(json.dumps(rec) + "\n\n" + json.dumps(rec) + "\n")
    _csv(tmp_path / "c.csv", list(rec), [list(rec.values())])
    ex = upstream.parse_tsqa(sorted(tmp_path.glob("*.*")))
    assert len(ex) == 5 and {len(e.series[0]) for e in ex} == {64, 32}
    e = ex[0]
    assert e.stage == "stage1_mcq" and e.answer == "(a) up" and e.meta["label"] == "a"
    assert e.prompt().startswith("What is the trend?") and e.prompt().endswith("Predict the Trend Answer:")
    assert "This is the time series, it has mean" in e.prompt()
    (tmp_path / "bad.json").write_text(json.dumps([{"Task": "Trend", "Question": "q", "Answer": "a"}]))
    with pytest.raises(SDTError, match="bad.json: row 1: missing field.*Series"):
        upstream.parse_tsqa([tmp_path / "bad.json"])


def test_parse_m4_captions(tmp_path):
    folder = tmp_path / "M4TimeSeriesCaptionDataset"
    folder.mkdir()
    _csv(folder / "m4_series_Monthly.csv", ["id", "series"], [["M1", json.dumps(_lst(50))], ["M2", json.dumps(_lst(30, 1))]])
    _csv(folder / "m4_captions_Monthly.csv", ["id", "caption"], [["M1", "A rising series."], ["M9", "unused"]])
    ex = upstream.parse_m4_captions(tmp_path)
    assert len(ex) == 1 and ex[0].answer == "A rising series." and ex[0].meta["frequency"] == "Monthly"
    assert ex[0].post_prompt.startswith("Please generate a detailed caption")


def test_parse_har_and_sleep_cot(tmp_path):
    ex = upstream.parse_har_cot(_har_cot_csv(tmp_path / "har_cot_train_cot.csv"))
    assert len(ex) == 4 and all(len(e.series) == 3 and len(e.series[0]) == 40 for e in ex)
    assert [e.label for e in ex] == ["walking", "sitting", "biking", "walking_up"]
    assert all(parse_label("stage3_cot", e.answer, e.options) == e.label for e in ex)
    assert ex[0].post_prompt == "Rationale:" and "accelerometer data on the y-axis" in ex[0].prompt()
    sleep = upstream.parse_sleep_cot(_sleep_cot_csv(tmp_path / "sleep_cot.csv"))
    assert len(sleep) == 12 and len(sleep[0].series[0]) == 300  # [[...]] with one row -> one series
    assert all(parse_label("stage4_sleep_cot", e.answer, e.options) == e.label for e in sleep)


def test_parse_ecg_qa_cot_reads_ptbxl(tmp_path):
    ptbxl = _ptbxl(tmp_path / "ptbxl")
    ex = upstream.parse_ecg_qa_cot(_ecg_qa_cot_csv(tmp_path / "ecg_qa_cot_train.csv"), ptbxl)
    assert len(ex) == 2 and [e.meta["ecg_id"] for e in ex] == [1, 1002]
    e = ex[0]
    assert len(e.series) == 12 and len(e.series[0]) == 200  # 2 s at 500 Hz -> 100 Hz
    assert e.names[1] == "The ECG lead II" and e.label == "no" and "atrial fibrillation" in e.prompt()
    assert len(upstream.parse_ecg_qa_cot(tmp_path / "ecg_qa_cot_train.csv", ptbxl, n=1)) == 1


def test_bad_upstream_rows_name_file_and_row(tmp_path):
    rows = [[str([1.0, 2.0, 3.0, 4.0])] * 3 + ["walking", "Answer: walking"],
            [str([1.0, float("nan"), 3.0, 4.0])] + [str([1.0, 2.0, 3.0, 4.0])] * 2 + ["sitting", "Answer: sitting"]]
    path = _csv(tmp_path / "har.csv", ["x_axis", "y_axis", "z_axis", "label", "rationale"], rows)
    with pytest.raises(SDTError, match=r"har.csv: row 3, column x_axis has a non-finite value \(nan\) at index 1"):
        upstream.parse_har_cot(path)
    path = _csv(tmp_path / "short.csv", ["time_series", "label", "rationale"], [["[[1.0, 2.0]]", "Wake", "x"]])
    with pytest.raises(SDTError, match=r"short.csv: row 2, column time_series has 2 points; at least 4"):
        upstream.parse_sleep_cot(path)
    path = _csv(tmp_path / "garbled.csv", ["time_series", "label", "rationale"], [["[1.0, oops]", "Wake", "x"]])
    with pytest.raises(SDTError, match="garbled.csv: row 2, column time_series: not a list"):
        upstream.parse_sleep_cot(path)
    path = _csv(tmp_path / "cols.csv", ["x_axis", "label"], [["[1]", "a"]])
    with pytest.raises(SDTError, match="cols.csv: row 1: missing column.*y_axis"):
        upstream.parse_har_cot(path)
    with pytest.raises(SDTError, match="not found"):
        upstream.parse_sleep_cot(tmp_path / "none.csv")


# --------------------------------------------------------------------------- download and unpack


def _serve(monkeypatch, name, path):
    monkeypatch.setitem(upstream.ARCHIVES, name, upstream.Archive(path.as_uri(), upstream.ARCHIVES[name].filename))


def test_fetch_zip_tar_and_plain_then_load(tmp_path, monkeypatch, sdt_home):
    src = tmp_path / "src"
    src.mkdir()
    with zipfile.ZipFile(tmp_path / "har.zip", "w") as z:
        for split in ("train", "val", "test"):
            z.write(_har_cot_csv(src / f"har_cot_{split}_cot.csv"), f"har_cot_{split}_cot.csv")
    _serve(monkeypatch, "har_cot", tmp_path / "har.zip")
    ex = upstream.load_upstream("stage3_cot", "val", n=3)
    assert len(ex) == 3 and all(e.stage == "stage3_cot" for e in ex)
    assert (sdt_home / "upstream" / "har_cot" / "files" / "har_cot_val_cot.csv").is_file()
    assert not (sdt_home / "upstream" / "har_cot" / "har_cot.zip").exists()  # the archive is removed once unpacked

    _serve(monkeypatch, "sleep_cot", _sleep_cot_csv(src / "sleep_cot.csv", n=40))
    splits = {s: upstream.load_upstream("stage4_sleep_cot", s) for s in ("train", "val", "test")}
    ids = [set(e.meta["id"] for e in v) for v in splits.values()]
    assert sum(map(len, ids)) == 40 and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])

    cot_dir = src / "ecg_qa_cot"
    cot_dir.mkdir()
    for split in ("train", "val", "test"):
        _ecg_qa_cot_csv(cot_dir / f"ecg_qa_cot_{split}.csv")
    with tarfile.open(tmp_path / "cot.tar.gz", "w:gz") as t:
        t.add(cot_dir, arcname="ecg_qa_cot")
    ptbxl = _ptbxl(src / "ptb-xl-1.0.3")
    with zipfile.ZipFile(tmp_path / "ptbxl.zip", "w") as z:
        for f in ptbxl.rglob("*"):
            z.write(f, f.relative_to(src))
    _serve(monkeypatch, "ecg_qa_cot", tmp_path / "cot.tar.gz")
    _serve(monkeypatch, "ptbxl", tmp_path / "ptbxl.zip")
    ex = build_stage("stage5_ecg_cot", "test", 1, upstream=True)
    assert len(ex) == 1 and len(ex[0].series) == 12


def test_load_tsqa_and_m4_captions_split_by_id(tmp_path, monkeypatch):
    recs = [{"Task": "Trend", "Question": f"q{i}", "Answer": "a", "Series": json.dumps(_lst(16, i))} for i in range(50)]
    (tmp_path / "tsqa.json").write_text(json.dumps(recs))
    monkeypatch.setattr(upstream, "fetch_tsqa", lambda timeout=60.0: [tmp_path / "tsqa.json"])
    got = {s: upstream.load_upstream("stage1_mcq", s) for s in ("train", "val", "test")}
    assert sum(len(v) for v in got.values()) == 50 and len(got["train"]) > len(got["test"])
    series = np.arange(9000, dtype=float).tolist()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m4_series_Weekly.csv", "id,series\n" + "".join(f'W{i},"{json.dumps(series[:20 + i])}"\n' for i in range(30)))
        z.writestr("m4_captions_Weekly.csv", "id,caption\n" + "".join(f"W{i},caption {i}\n" for i in range(30)))
        z.writestr("m4_series_Monthly.csv", 'id,series\nM1,"' + json.dumps(series) + '"\n')
        z.writestr("m4_captions_Monthly.csv", "id,caption\nM1,a long one\n")
    (tmp_path / "m4.zip").write_bytes(buf.getvalue())
    _serve(monkeypatch, "m4_captions", tmp_path / "m4.zip")
    ex = [e for s in ("train", "val", "test") for e in upstream.load_upstream("stage2_captioning", s)]
    assert len(ex) == 31
    longest = max(ex, key=lambda e: e.meta["id"] == "M1")
    assert len(longest.series[0]) <= upstream.MAX_POINTS  # long series are averaged down for the encoder
    assert upstream.hash_split("W3") == upstream.hash_split("W3")


def test_unreachable_host_is_one_line_and_fast(monkeypatch):
    monkeypatch.setitem(upstream.ARCHIVES, "har_cot", upstream.Archive("http://127.0.0.1:9/har_cot.zip", "har_cot.zip"))
    start = time.time()
    with pytest.raises(SDTError) as e:
        upstream.load_upstream("stage3_cot", "train", timeout=5)
    msg = str(e.value)
    assert "cannot download har_cot from 127.0.0.1" in msg and "offline" in msg and "\n" not in msg
    with pytest.raises(SDTError) as e:
        upstream.fetch_tsqa(timeout=5, endpoint="http://127.0.0.1:9")
    assert "cannot download the TSQA dataset" in str(e.value) and "\n" not in str(e.value)
    assert time.time() - start < 20
    with pytest.raises(SDTError, match="stage6_forecast has no upstream"):
        upstream.load_upstream("stage6_forecast", "train")


def test_damaged_or_escaping_archives(tmp_path, monkeypatch, sdt_home):
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    _serve(monkeypatch, "har_cot", tmp_path / "bad.zip")
    with pytest.raises(SDTError, match="damaged archive"):
        upstream.fetch("har_cot")
    assert not (sdt_home / "upstream" / "har_cot" / "har_cot.zip").exists()  # removed: the next run downloads anew
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("../../outside.csv", "x")
    _serve(monkeypatch, "har_cot", tmp_path / "evil.zip")
    with pytest.raises(SDTError, match="outside"):
        upstream.fetch("har_cot")
    assert not (sdt_home / "outside.csv").exists()
