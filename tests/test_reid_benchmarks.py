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
