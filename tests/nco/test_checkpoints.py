"""Checkpoint files: descriptions read without the weights, name/path/run-directory resolution,
the shipped checkpoint per problem and size, caches and clear errors (nco.checkpoints)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nco.checkpoints as C
from nco.checkpoints import (
    EXPORT_FORMAT,
    ModelNotFoundError,
    checkpoint_info,
    load_model,
    load_model_cached,
    read_checkpoint,
    read_info,
    resolve_checkpoint,
    select_checkpoint,
    shipped_checkpoints,
    trained_sizes,
)
from nco.envs import get_problem
from nco.policies import AttentionPolicy
from nco.train_config import TrainConfig

TINY = {"d_model": 16, "num_layers": 1, "num_heads": 2, "d_ff": 32}


def _exported(path: Path, info: dict, state: dict[str, torch.Tensor] | None = None) -> Path:
    """A file in the export format with the given description (and a dummy state dict)."""
    payload = {
        "format": EXPORT_FORMAT,
        "format_version": 1,
        "info": {"policy": {}, **info},
        "state_dict": state if state is not None else {"w": torch.zeros(4)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def _lightning_like(path: Path, *, global_step: int = 7, epoch: int = 1) -> Path:
    """A Lightning-style checkpoint, with loop state the weights-only unpickler refuses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {"policy.w": torch.ones(3), "baseline.ema": torch.zeros(())},
            "hyper_parameters": {"problem": "tsp", "size": 12, "policy": {}},
            "global_step": global_step,
            "epoch": epoch,
            "loops": argparse.Namespace(position=3),
        },
        path,
    )
    return path


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> Path:
    """An empty folder standing in for ``nco/data/checkpoints``."""
    d = tmp_path / "shipped"
    d.mkdir()
    monkeypatch.setattr(C, "checkpoints_dir", lambda: d)
    return d


def _bytes_read() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


# ----------------------------------------------------------------------------- descriptions
@pytest.mark.skipif(
    not os.path.exists("/proc/self/io"), reason="needs Linux's per-process I/O counters"
)
def test_description_is_read_without_the_weights(tmp_path):
    _exported(tmp_path / "warm.pt", {"problem": "cvrp", "size": 5})
    read_info(tmp_path / "warm.pt")  # torch's lazy imports happen here, not in the measurement
    weights = {"w": torch.zeros(4_000_000)}  # 16 MB of weights
    big = _exported(tmp_path / "big.pt", {"problem": "cvrp", "size": 50}, weights)
    before = _bytes_read()
    info = read_info(big)
    read = _bytes_read() - before
    assert big.stat().st_size > 16_000_000
    assert read < 1_000_000, f"read {read} bytes of a {big.stat().st_size}-byte file"
    assert (info["problem"], info["size"]) == ("cvrp", 50)
    assert info == read_checkpoint(big)[0] | {"source": str(big.resolve())}


def test_lightning_checkpoint_description_and_policy_state(tmp_path):
    ckpt = _lightning_like(tmp_path / "run" / "checkpoints" / "last.ckpt", global_step=9, epoch=2)
    info = read_info(ckpt)
    assert (info["problem"], info["size"], info["global_step"], info["epoch"]) == ("tsp", 12, 9, 2)
    _, state, path = read_checkpoint(ckpt)
    assert path == ckpt and list(state) == ["w"] and torch.equal(state["w"], torch.ones(3))


def test_load_raw_maps_the_tensors_of_a_file_it_can_read(tmp_path):
    ckpt = _lightning_like(tmp_path / "x.ckpt", global_step=4)
    mapped, whole = C.load_raw(ckpt, mmap=True), C.load_raw(ckpt)
    assert mapped["global_step"] == whole["global_step"] == 4
    assert torch.equal(mapped["state_dict"]["policy.w"], whole["state_dict"]["policy.w"])


def test_description_cache_returns_fresh_dicts_and_follows_rewrites(tmp_path):
    path = _exported(tmp_path / "m.pt", {"problem": "cvrp", "size": 20})
    first = read_info(path)
    first["size"] = -1
    assert read_info(path)["size"] == 20
    _exported(path, {"problem": "cvrp", "size": 30})
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert read_info(path)["size"] == 30


def test_checkpoint_info_records_sizes_and_trained_sizes_reads_them():
    single = TrainConfig(problem="cvrp", size=20, preset="pomo", policy=TINY)
    info = checkpoint_info(single.policy_config(), single)
    assert (info["problem"], info["size"], info["preset"]) == ("cvrp", 20, "pomo")
    assert "size_range" not in info and trained_sizes(info) == (20, 20)
    ranged = single.replace(size=(10, 40))
    info = checkpoint_info(ranged.policy_config(), ranged)
    assert info["size"] == 40 and info["size_range"] == [10, 40]
    assert trained_sizes(info) == (10, 40)
    assert trained_sizes({"problem": "cvrp"}) == (0, 0)


# ----------------------------------------------------------------------------- errors
def test_unreadable_or_foreign_files_raise_errors_naming_the_file(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"junk\.pt: not a readable checkpoint"):
        read_info(junk)
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    with pytest.raises(ValueError, match=r"list\.pt: not an nco checkpoint \(holds a list\)"):
        read_info(listing)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match=r"foreign\.pt: not an nco checkpoint \(neither"):
        read_checkpoint(foreign)
    undescribed = tmp_path / "undescribed.pt"
    torch.save({"format": EXPORT_FORMAT, "info": {"size": 3}, "state_dict": {}}, undescribed)
    with pytest.raises(ValueError, match=r"undescribed\.pt: checkpoint lacks problem, policy"):
        read_info(undescribed)


# ----------------------------------------------------------------------------- resolution
def test_resolve_by_path_run_directory_and_shipped_name(tmp_path, shipped):
    run = tmp_path / "run"
    last = _lightning_like(run / "checkpoints" / "last.ckpt")
    assert resolve_checkpoint(run) == last  # no best.ckpt yet
    best = _lightning_like(run / "checkpoints" / "best.ckpt")
    assert resolve_checkpoint(run) == best and resolve_checkpoint(str(last)) == last
    cvrp = _exported(shipped / "cvrp20.pt", {"problem": "cvrp", "size": 20})
    assert resolve_checkpoint("cvrp20") == cvrp == resolve_checkpoint("cvrp20.pt")
    assert read_info("cvrp20")["source"] == str(cvrp.resolve())
    assert shipped_checkpoints() == [cvrp]


def test_unknown_names_and_paths_raise_model_not_found_listing_the_shipped(tmp_path, shipped):
    with pytest.raises(ModelNotFoundError, match="no checkpoints are shipped yet"):
        resolve_checkpoint("cvrp20")
    _exported(shipped / "cvrp20.pt", {"problem": "cvrp", "size": 20})
    _exported(shipped / "tsp50.pt", {"problem": "tsp", "size": 50})
    (shipped / "tsp50.md").write_text("# a model card, not a checkpoint\n")
    with pytest.raises(FileNotFoundError) as err:
        resolve_checkpoint("cvrp99")
    assert str(err.value) == (
        "cvrp99: no such checkpoint file or shipped checkpoint name; "
        "shipped checkpoints: cvrp20, tsp50"
    )
    with pytest.raises(ModelNotFoundError, match=r"no such checkpoint file; shipped checkpoints"):
        resolve_checkpoint(tmp_path / "missing.ckpt")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match=r"empty-run: no checkpoints/best\.ckpt or"):
        load_model(empty)


def test_select_checkpoint_picks_the_nearest_training_size(shipped):
    _exported(shipped / "a.pt", {"problem": "cvrp", "size": 100})
    _exported(shipped / "b.pt", {"problem": "cvrp", "size": 400, "size_range": [100, 400]})
    _exported(shipped / "c.pt", {"problem": "cvrp", "size": 50})
    _exported(shipped / "t.pt", {"problem": "tsp", "size": 1000})
    picks = {n: select_checkpoint("cvrp", n).name for n in (250, 100, 1000, 60, 75)}
    # inside the range; a tie with a.pt goes to the larger size; nearest below; tie -> larger
    assert picks == {250: "b.pt", 100: "b.pt", 1000: "b.pt", 60: "c.pt", 75: "b.pt"}
    assert select_checkpoint("tsp", 10).name == "t.pt"
    needle = r"no shipped checkpoint for problem 'cvrptw'; shipped checkpoints: a, b, c, t\."
    with pytest.raises(ModelNotFoundError, match=needle):
        select_checkpoint("cvrptw", 50)


# ----------------------------------------------------------------------------- loading
def test_load_model_cached_shares_one_policy_per_file_and_device(tmp_path):
    cfg = TrainConfig(problem="cvrp", size=10, preset="pomo", policy=TINY)
    pcfg = cfg.policy_config()
    policy = AttentionPolicy(pcfg, get_problem("cvrp"))
    path = _exported(tmp_path / "tiny.pt", checkpoint_info(pcfg, cfg), policy.state_dict())
    cached, info = load_model_cached(path)
    assert load_model_cached(str(path), device="cpu")[0] is cached
    fresh, _ = load_model(path, problem="cvrp")
    assert fresh is not cached and info["problem"] == "cvrp" and not cached.training
    for a, b in zip(fresh.state_dict().values(), policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"trained on problem 'cvrp', but problem 'tsp'"):
        load_model(path, problem="tsp")


def test_checkpoints_module_imports_no_trainer():
    code = (
        "import sys\nimport nco.checkpoints\n"
        "print(sorted(m for m in sys.modules if m.startswith('nco.train') or m == 'lightning'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
