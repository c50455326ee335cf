"""Smoke test of the benchmark harness (bench/run.py through `python -m kdlib bench`): one step per mode."""
from __future__ import annotations

import json

import pytest

from kdlib.__main__ import main


def test_bench_quick_writes_the_record_and_prints_the_table(tmp_path, capsys):
    main(["bench", "--quick", "--device", "cpu", "--workloads", "synthetic:resnet56-resnet20",
          "--modes", "reference", "bf16-cl", "bf16-cl-x4", "--batches", "8", "--workers", "1",
          "--out", str(tmp_path)])
    [path] = tmp_path.glob("*.json")
    record = json.loads(path.read_text())
    rows = record["rows"]
    assert [r["mode"] for r in rows] == ["reference", "bf16-cl", "bf16-cl-x4"]
    for r in rows:
        assert r["timed_steps"] == 1 and r["batch"] == 8 and r["seconds"] > 0
        assert r["epoch_s"] == pytest.approx(50_000 / r["student_images_per_s"])
        assert r["gflop_per_image"] > 0
    ref, one, four = rows
    assert ref["vs_reference"] == 1.0 and one["vs_reference"] > 0
    assert four["students"] == 4 and four["student_images_per_s"] == pytest.approx(4 * four["images_per_s"])
    assert four["gflop_per_image"] > one["gflop_per_image"]
    assert record["command"].startswith("python -m kdlib bench --quick")
    assert record["machine"]["cores"] >= 1 and record["machine"]["torch"]
    assert len(record["load_average_before"]) == 3 and record["bf16_matmul_peak_tflops"] is None
    out = capsys.readouterr().out
    assert "| workload | batch | mode |" in out and "| bf16-cl-x4 | 4 |" in out


def test_bench_names_the_valid_choices(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--modes", "turbo"])
    assert capsys.readouterr().err.startswith("error: unknown mode 'turbo'; valid modes: reference, fp32, ")
