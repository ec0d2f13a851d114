"""Headless batch machinery: shards, launcher environment, output states, the manifest, prefetching."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from napari_octseg.batch import (
    MANIFEST_NAME,
    LaunchEnv,
    Manifest,
    Shard,
    data_file_record,
    fingerprint,
    launch_device,
    launch_env,
    launch_shard,
    output_state,
    parse_shard,
    prefetched,
    read_manifest,
    remove_temporaries,
    shard_inputs,
)
from napari_octseg.core.errors import InputError


# ------------------------------------------------------------------------------------------ shards
def test_parse_shard():
    assert parse_shard("0/1") == Shard(0, 1) and parse_shard("3/4") == Shard(3, 4)
    for bad in ("4/4", "-1/4", "1/0", "a/b", "1", "1/2/3"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 30])
def test_shards_are_disjoint_complete_balanced_and_independent_of_input_order(count):
    names = [f"sub{i:03d}/scan_{random.Random(i).random():.6f}.vol" for i in range(23)]
    shares = [shard_inputs(names, Shard(k, count)) for k in range(count)]
    flat = [p for share in shares for p in share]
    assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))  # union = all, disjoint
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    shuffled = names[:]
    random.Random(7).shuffle(shuffled)
    assert [shard_inputs(shuffled, Shard(k, count)) for k in range(count)] == shares  # same split everywhere


def test_launch_env_and_shard_from_torchrun_variables():
    env = launch_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert env == LaunchEnv(1, 2, 1, 2) and env.distributed
    assert launch_shard(None, env) == Shard(1, 2)
    assert launch_shard(None, launch_env({})) == Shard(0, 1)
    with pytest.raises(InputError, match="inconsistent"):
        launch_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(InputError, match="whole numbers"):
        launch_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_slurm_array_of_torchrun_jobs_composes_into_disjoint_complete_shares():
    names = [f"f{i}.npy" for i in range(41)]
    got = []
    for task in range(3):  # --shard $SLURM_ARRAY_TASK_ID/3 ...
        for rank in range(4):  # ... each task a torchrun of 4 ranks
            env = LaunchEnv(rank, 4, rank, 4)
            got.extend(shard_inputs(names, launch_shard(Shard(task, 3), env)))
    assert sorted(got) == sorted(names) and len(got) == len(set(got))


def test_launch_device_gives_each_rank_its_gpu_or_its_share_of_cores(monkeypatch):
    import torch

    env = LaunchEnv(rank=3, world_size=4, local_rank=1, local_world_size=2)
    assert launch_device("cpu", env) == "cpu" and launch_device("auto", LaunchEnv()) == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert launch_device("auto", env) == "cuda:1" and launch_device("cuda", env) == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    threads = torch.get_num_threads()
    monkeypatch.setattr("napari_octseg.batch.cpu_cores", lambda: 16)
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert launch_device("auto", env) == "cpu" and torch.get_num_threads() == 8
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's default for several processes: respected
        torch.set_num_threads(3)
        assert launch_device("auto", env) == "cpu" and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------ output state
def _write_outputs(folder: Path, run: dict, data: bytes = b"labels") -> tuple[Path, Path]:
    tif, side = folder / "a.labels.tif", folder / "a.labels.json"
    tif.write_bytes(data)
    side.write_text(json.dumps({"shape": [1], "run": {**run, "files": {tif.name: data_file_record(tif)}}}))
    return tif, side


def test_output_states(tmp_path):
    src = tmp_path / "a.npy"
    src.write_bytes(b"input")
    model = {"name": "m", "sha256": "1" * 64}
    expected = fingerprint("segment", model, {"layer": "decoder"}, src)
    out = tmp_path / "out"
    out.mkdir()
    tif, side = out / "a.labels.tif", out / "a.labels.json"
    assert output_state([tif], side, expected).status == "missing"
    _write_outputs(out, expected)
    assert output_state([tif], side, expected).status == "current"

    other_model = fingerprint("segment", {**model, "sha256": "2" * 64}, {"layer": "decoder"}, src)
    state = output_state([tif], side, other_model)
    assert state.status == "stale" and "model" in state.reason and state.needs_work
    other_options = fingerprint("segment", model, {"layer": "final"}, src)
    assert output_state([tif], side, other_options).status == "stale"
    time.sleep(0.01)
    src.write_bytes(b"another scan")  # same name, new content
    assert output_state([tif], side, fingerprint("segment", model, {"layer": "decoder"}, src)).reason.endswith("input")

    os.utime(tif, ns=(1, 1))  # copied without its times, same bytes: still current (checked by SHA-256)
    assert output_state([tif], side, expected).status == "current"
    tif.write_bytes(b"edited")  # changed after octseg wrote it (a hand correction): never redone silently
    state = output_state([tif], side, expected)
    assert state.status == "foreign" and not state.needs_work and "already exists" in state.reason
    tif.unlink()  # killed between the two renames: the sidecar is there, its data file not
    assert output_state([tif], side, expected).status == "partial"
    side.write_text("{")  # no readable record: not ours
    tif.write_bytes(b"labels")
    assert output_state([tif], side, expected).status == "foreign"
    side.unlink()
    assert output_state([tif], side, expected).status == "foreign"


def test_remove_temporaries_only_touches_the_targets_temporaries(tmp_path):
    target = tmp_path / "a.labels.tif"
    mine = [tmp_path / ".a.labels.tif.k2j3.tmp", tmp_path / ".a.labels.tif.x.tmp"]
    others = [tmp_path / ".b.labels.tif.k2j3.tmp", tmp_path / "a.labels.tif.tmp", tmp_path / "a.labels.tif"]
    for p in mine + others:
        p.write_bytes(b"x")
    assert sorted(remove_temporaries([target])) == sorted(mine)
    assert all(p.exists() for p in others) and not any(p.exists() for p in mine)


# ------------------------------------------------------------------------------------------ manifest
_WRITER = """
import sys
from pathlib import Path
from napari_octseg.batch import Manifest
m = Manifest(Path(sys.argv[1]), "segment")
for i in range(int(sys.argv[3])):
    m.append({"file": f"{sys.argv[2]}-{i}", "status": "done", "options": {"pad": "x" * 6000}})
"""


def test_manifest_rows_stay_valid_json_with_two_concurrent_writers(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), name, "300"], env=env) for name in "ab"]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line is one whole row (each > PIPE_BUF bytes)
    assert len(rows) == 600
    for name in "ab":
        assert [r["file"] for r in rows if r["file"].startswith(name)] == [f"{name}-{i}" for i in range(300)]
    assert {r["command"] for r in rows} == {"segment"} and all(r["pid"] and r["time"] for r in rows)


def test_a_row_cut_short_by_a_killed_writer_costs_only_that_row(tmp_path):
    m = Manifest(tmp_path, "segment", Shard(1, 2))
    m.append({"file": "a", "status": "done"})
    with open(tmp_path / MANIFEST_NAME, "a") as f:
        f.write('{"file": "b", "sta')  # SIGKILL in the middle of a write
    m.append({"file": "c", "status": "failed", "reason": "x"})
    rows = read_manifest(tmp_path / MANIFEST_NAME)
    assert [r["file"] for r in rows] == ["a", "c"] and rows[1]["shard"] == "1/2"


# ------------------------------------------------------------------------------------------ prefetch
def test_prefetch_reads_one_ahead_and_reports_errors_per_item():
    events: list[str] = []
    started = {i: threading.Event() for i in range(4)}

    def load(i: int) -> int:
        events.append(f"load {i}")
        started[i].set()
        if i == 2:
            raise InputError("bad file 2")
        return i * 10

    got = []
    for i, future in prefetched([0, 1, 2, 3], load):
        if i + 1 < 4:
            assert started[i + 1].wait(5)  # the next read runs while this item is processed
        assert not any(started[j].is_set() for j in range(i + 2, 4))  # never more than one ahead
        try:
            got.append(future.result())
        except InputError as exc:
            got.append(str(exc))
        events.append(f"use {i}")
    assert got == [0, 10, "bad file 2", 30]
    assert events.index("load 1") < events.index("use 0")


def test_prefetch_stops_reading_when_the_consumer_stops():
    loaded = []
    gen = prefetched(list(range(10)), lambda i: loaded.append(i) or i)
    next(gen)
    gen.close()
    time.sleep(0.05)
    assert len(loaded) <= 2
