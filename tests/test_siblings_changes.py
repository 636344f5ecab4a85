"""benchmarks/siblings_changes.py: each method's former siblings row beside its row at the authors' defaults."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "siblings_changes.py"


def _stat(values: list[float]) -> dict:
    mean = sum(values) / len(values)
    return {"mean": mean, "std": 0.5, "n": len(values), "values": values}


def test_every_faithful_mode_meets_the_row_it_replaces_with_both_ranks():
    spec = importlib.util.spec_from_file_location("siblings_changes", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    former = {"modes": {"ce": {"test_best": _stat([68.0])}, "dml": {"test_best": _stat([70.5, 70.4])}}}
    faithful = {
        "modes": {
            "ce": {"test_best": _stat([68.2])},
            "dml+data.batch_size=128": {"test_best": _stat([61.4, 61.0])},
            "dlb+data.batch_size=128": {"test_best": _stat([69.0])},
            "dml+loss.options.peer_update=joint": {"test_best": _stat([70.4])},
        }
    }
    records = {r["mode"]: r for r in script.changes(former, faithful)}
    dml = records["dml+data.batch_size=128"]
    assert dml["former_mode"] == "dml" and round(dml["change"], 2) == -9.25
    assert (dml["former_rank"], dml["new_rank"]) == (1, 4) and records["ce"]["new_rank"] == 3
    assert records["dlb+data.batch_size=128"]["former_mode"] is None  # a method the former table did not have
    text = script.to_markdown(list(records.values()), 2, 4)
    assert "| dml+data.batch_size=128 | 70.45 +- 0.50 (n=2), #1 (`dml`) | 61.20 +- 0.50 (n=2), #4 | -9.25 |" in text
    assert "| dlb+data.batch_size=128 | - (new) | 69.00 (n=1), #2 | - |" in text
    assert "| dml+loss.options.peer_update=joint (dhm variant: dhm's former joint DML) | 70.45" in text
