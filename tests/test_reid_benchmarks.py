"""The re-ID benchmark scripts in their tiny modes: the training-speed script through the engine's pieces, and the
table script's statistics (paired differences to bot on the same split and seed) on hand-made summaries."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reid_speed_tiny_mode_times_both_methods():
    result = _script("reid_speed").main(["--tiny"])
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"ce", "dhm"} and all(r["images_per_s"] > 0 for r in rows.values())
    assert rows["dhm"]["params_trained_m"] > rows["ce"]["params_trained_m"]  # the branches train too


def test_reid_table_pairs_each_method_with_bot_on_the_same_split_and_seed(tmp_path):
    table = _script("reid_table")

    def summary(m, last):
        test = {f"{k}/{h}": m for k in ("mAP", "rank1") for h in ("main", "head1", "concat")}
        return {"test": test, "test_last": {"mAP/main": last, "rank1/main": last}, "wall_time_s": 10.0}

    values = {
        ("bot", 0, 0): 10,
        ("bot", 0, 1): 20,
        ("bot", 1, 0): 30,
        ("bot-dhm", 0, 0): 13,
        ("bot-dhm", 0, 1): 21,
        ("bot-dhm", 1, 0): 35,
    }
    for (method, split, seed), m in values.items():
        folder = tmp_path / f"split{split}" / method / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(summary(m, m + 1)))
    rows = table.table(table.collect(tmp_path), ["bot", "bot-dhm"], baseline="bot")
    assert rows["bot-dhm"]["n"] == 3 and sorted(rows["bot-dhm"]["d_mAP"]) == [1, 3, 5]
    assert rows["bot"]["d_mAP"] == [0, 0, 0]
    text = table.markdown(rows)
    assert "| bot-dhm | 3 | 23.00 +- 11.14 |" in text and "3.00 +- 2.00" in text
    assert json.loads(json.dumps(rows))  # what --out writes
    with pytest.raises(SystemExit):
        table.main(["--help"])


def test_paired_differences_average_seeds_per_split_and_give_a_bootstrap_interval(tmp_path):
    """The split is the unit: seeds are averaged within a split, the interval is over splits; --ladder pairs each
    rung with the rung before it."""
    table = _script("reid_table")
    gains = {0: (1.0, 3.0), 1: (2.0, 2.0), 2: (4.0, 4.0), 3: (-1.0, 1.0)}  # per split: (seed 0, seed 1) of b - a
    for split, (g0, g1) in gains.items():
        for seed, gain in enumerate((g0, g1)):
            for method, value in (("a", 10.0), ("b", 10.0 + gain), ("c", 10.0 + gain + 1.0)):
                folder = tmp_path / f"split{split}" / method / f"seed{seed}"
                folder.mkdir(parents=True)
                main = {"mAP/main": value, "rank1/main": value}
                (folder / "summary.json").write_text(json.dumps({"test": main, "test_last": main, "wall_time_s": 1}))
    runs = table.collect(tmp_path)
    paired = table.paired_table(runs, ["a", "b", "c"], {"b": "a", "c": "b"})
    cell = paired["b"]["mAP_last"]
    assert cell["splits"] == {0: 2.0, 1: 2.0, 2: 4.0, 3: 0.0} and cell["n"] == 4 and cell["mean"] == 2.0
    assert cell["se"] == pytest.approx(1.6329931618554523 / 2) and cell["t"] == pytest.approx(2.0 / 0.816496580927726)
    lo, hi = cell["ci95"]
    assert 0.0 <= lo < 2.0 < hi <= 4.0  # a percentile interval of resampled means lies within the splits' range
    assert paired["c"]["mAP_best"]["mean"] == 1.0 and paired["c"]["mAP_best"]["se"] == 0.0
    out = tmp_path / "table"
    table.main([str(tmp_path), "--methods", "a,b,c", "--ladder", "--labels", "ID only=a;+x=b", "--out", str(out)])
    text = out.with_suffix(".md").read_text()
    assert "| +x | ID only | 4 | +2.00 [" in text and "| c | +x | 4 | +1.00 [+1.00, +1.00]" in text
    assert set(json.loads(out.with_suffix(".json").read_text())["paired"]) == {"b", "c"}
