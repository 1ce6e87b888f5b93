"""Tune's saved state on storage: damaged files are recognised without being loaded, and a
resume puts back the last consistent set (issue 15.7: a search SIGKILLed while Tune copied its
state to storage left an empty searcher pickle, and the resume forgot every trial)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from platform.search import statefiles

SESSION = "2026-12-05_07-00-00"


def _write_state(folder: Path, trials: list[str], counter: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"experiment_state-{SESSION}.json").write_text(json.dumps({"trial_data": trials}))
    (folder / f"search_gen_state-{SESSION}.json").write_bytes(pickle.dumps({"counter": counter}, protocol=5))
    (folder / f"searcher-state-{SESSION}.pkl").write_bytes(pickle.dumps({"trials": trials}, protocol=4))
    (folder / f"callback-states-{SESSION}.pkl").write_bytes(pickle.dumps([{"run_ids": {}}]))


def _state(folder: Path) -> tuple[list, dict, dict]:
    exp = json.loads((folder / f"experiment_state-{SESSION}.json").read_text())["trial_data"]
    gen = pickle.loads((folder / f"search_gen_state-{SESSION}.json").read_bytes())
    searcher = pickle.loads((folder / f"searcher-state-{SESSION}.pkl").read_bytes())
    return exp, gen, searcher


def test_every_truncation_of_a_pickle_or_json_is_seen_as_damaged(tmp_path):
    blob = pickle.dumps({"counter": 3, "names": ["a" * 50, 1.5, None]}, protocol=5)
    text = json.dumps({"trial_data": [["x", "y"]], "runner_data": {"a": 1}}).encode()
    for data in (blob, text):
        f = tmp_path / "f"
        f.write_bytes(data)
        assert statefiles.intact(f)
        for n in range(len(data)):
            f.write_bytes(data[:n])
            assert not statefiles.intact(f), (data[:n], n)


def test_checking_a_pickle_runs_nothing(tmp_path):
    class Payload:
        def __reduce__(self):
            return (Path(tmp_path / "pwned").touch, ())

    f = tmp_path / "searcher-state-x.pkl"
    f.write_bytes(pickle.dumps(Payload()))
    assert statefiles.intact(f)
    assert not (tmp_path / "pwned").exists()


def test_a_damaged_searcher_state_brings_back_the_last_consistent_set(tmp_path):
    staging, exp = tmp_path / "staging", tmp_path / "exp"
    _write_state(staging, ["t1"], 1)
    assert statefiles.snapshot(staging, exp)
    _write_state(staging, ["t1", "t2"], 2)
    assert statefiles.snapshot(staging, exp)  # the newer set replaces the older one
    _write_state(exp, ["t1", "t2"], 2)  # ... copied to storage; the copy of the next save is cut short:
    (exp / f"experiment_state-{SESSION}.json").write_text(json.dumps({"trial_data": ["t1", "t2", "t3"]}))
    (exp / f"searcher-state-{SESSION}.pkl").write_bytes(b"")

    assert statefiles.repair(exp)
    assert _state(exp) == (["t1", "t2"], {"counter": 2}, {"trials": ["t1", "t2"]})
    assert (exp / f"callback-states-{SESSION}.pkl").is_file()  # intact: kept
    assert not statefiles.repair(exp)  # nothing left to repair


def test_without_a_consistent_set_the_state_is_removed_and_the_trials_start_afresh(tmp_path):
    exp = tmp_path / "exp"
    _write_state(exp, ["t1"], 1)
    (exp / f"search_gen_state-{SESSION}.json").write_bytes(pickle.dumps({"counter": 1})[:-3])
    assert statefiles.repair(exp)
    assert not list(exp.glob("experiment_state-*")) and not list(exp.glob("search*state-*"))


def test_a_damaged_callbacks_state_alone_is_dropped_and_the_rest_kept(tmp_path):
    exp = tmp_path / "exp"
    _write_state(exp, ["t1"], 1)
    (exp / f"callback-states-{SESSION}.pkl").write_bytes(b"\x80\x05\x95")
    assert statefiles.repair(exp)
    assert _state(exp) == (["t1"], {"counter": 1}, {"trials": ["t1"]})
    assert not list(exp.glob("callback-states-*"))


def test_a_kill_between_the_renames_of_a_snapshot_keeps_the_previous_set(tmp_path):
    staging, exp = tmp_path / "staging", tmp_path / "exp"
    _write_state(staging, ["t1"], 1)
    statefiles.snapshot(staging, exp)
    (exp / statefiles.GOOD).rename(exp / f"{statefiles.GOOD}.abc.old")  # the kill: old moved, new not in place
    (exp / f"{statefiles.GOOD}.def.tmp").mkdir()
    _write_state(exp, ["t1", "t2"], 2)
    (exp / f"experiment_state-{SESSION}.json").write_text("{\"trial_da")
    assert statefiles.repair(exp)
    assert _state(exp)[0] == ["t1"]
    assert sorted(p.name for p in exp.glob(f"{statefiles.GOOD}*")) == [statefiles.GOOD]
