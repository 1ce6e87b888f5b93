"""Interleaved rounds and their ratios (``platform.bench._measure``), the train benchmark's options."""

from __future__ import annotations

import time

import pytest
import torch

from platform.bench._measure import interleave, md_table, speed_ratio


def test_interleave_takes_turns_and_times_each_contender():
    order = []

    def sleeper(name, seconds):
        def step():
            order.append(name)
            time.sleep(seconds)
        return step

    times = interleave({"fast": sleeper("fast", 0.01), "slow": sleeper("slow", 0.03)}, rounds=3, per_round=2,
                       device=torch.device("cpu"))
    assert order == ["fast", "fast", "slow", "slow"] * 3  # rounds of turns, not one loop after the other
    assert [len(v) for v in times.values()] == [3, 3]
    assert all(0.009 < t < 0.05 for t in times["fast"])
    r = speed_ratio(times, "fast", "slow")
    assert 1.5 < r["ratio"] < 3.5  # ~3x faster, whatever the machine's load
    assert r["round_min"] <= r["ratio"] <= r["round_max"]


def test_speed_ratio_is_the_ratio_of_medians_with_the_per_round_spread():
    times = {"platform": [1.0, 2.0, 1.1], "bare": [1.0, 4.0, 1.0]}
    r = speed_ratio(times, "platform", "bare")
    assert r["ratio"] == pytest.approx(1.0 / 1.1)  # median(bare) / median(platform)
    assert (r["round_min"], r["round_max"], r["rounds"]) == (pytest.approx(1.0 / 1.1), 2.0, 3)


def test_interleave_stops_at_the_deadline_after_the_minimum_rounds():
    times = interleave({"a": lambda: None}, rounds=100, per_round=1, device=torch.device("cpu"),
                       deadline=time.time() - 1, min_rounds=2)
    assert len(times["a"]) == 2


def test_md_table_formats_cells():
    text = md_table(["a", "b", "c"], [[1.23456, None, "x|y"], [12345.6, 3, "z"]])
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1.23 | - | x/y |", "| 12346 | 3 | z |"]


def test_train_bench_rejects_a_non_positive_round_count(capsys):
    from platform.bench.train import main

    assert main(["--device", "cpu", "--rounds", "0"]) == 2
    assert "--rounds is 0" in capsys.readouterr().err
