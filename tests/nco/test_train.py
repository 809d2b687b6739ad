"""Training: REINFORCE module, baselines, resume, signals, checkpoints, DDP and the CLI.

All runs use tiny policies (d_model 16-32, 1-2 layers) on TSP8-10 / CVRP8 on the CPU with one
thread per process (the suite shares two cores with other jobs).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from nco.checkpoints import export_model, load_model
from nco.commands import train as train_cmd
from nco.envs import get_problem
from nco.train import (
    REINFORCEModule,
    RewardScaler,
    SharedBaseline,
    TrainConfig,
    decode_costs,
    load_validation_set,
    paired_ttest_one_sided,
    train,
)

TINY = {"d_model": 16, "num_layers": 1, "num_heads": 2, "d_ff": 32}
TINY_FLAGS = ["--d-model", "16", "--num-layers", "1", "--num-heads", "2", "--d-ff", "32"]
ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _column(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def _tiny_config(**kw) -> TrainConfig:
    base = dict(
        problem="tsp",
        size=8,
        preset="am",
        policy=TINY,
        batch_size=16,
        instances_per_epoch=64,
        epochs=3,
        lr=1e-3,
        val_size=32,
        bl_eval_size=64,
        log_every=1,
        accelerator="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One short am/TSP8 run with reference costs (for val/gap), shared by the checkpoint tests."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("run") / "tsp8"
    cfg = _tiny_config(
        epochs=1, instances_per_epoch=32, val_size=8, val_reference=",".join(["2.5"] * 8)
    )
    result = train(cfg, run, progress_bar=False)
    assert result.status == "finished" and result.global_step == 2
    return run


# ----------------------------------------------------------------------------- units
def test_shared_baseline_averages_all_rollouts():
    reward = torch.tensor([[1.0, 3.0, 5.0, 7.0], [0.0, 0.0, 2.0, 2.0]])
    assert torch.equal(SharedBaseline().value(None, reward, None), torch.tensor([[4.0], [1.0]]))


def test_baseline_registry_builds_every_named_baseline():
    from nco.policies import build_policy
    from nco.train import (
        BASELINE_REGISTRY,
        BASELINES,
        ExponentialBaseline,
        NoBaseline,
        RolloutBaseline,
        make_baseline,
    )

    assert tuple(BASELINE_REGISTRY) == BASELINES  # the light config module lists the same names
    cfg = _tiny_config(ema_beta=0.5).resolved()
    problem = get_problem(cfg.problem)
    policy = build_policy(cfg.policy_config(), problem)
    kinds = {
        "rollout": RolloutBaseline,
        "exponential": ExponentialBaseline,
        "shared": SharedBaseline,
        "none": NoBaseline,
    }
    for name, kind in kinds.items():
        baseline = make_baseline(cfg.replace(baseline=name), policy, problem)
        assert type(baseline) is kind and baseline.name == name
    rollout = make_baseline(cfg, policy, problem)
    assert rollout.policy is not policy and rollout.eval_size == cfg.bl_eval_size
    assert all(torch.equal(a, b) for a, b in zip(rollout.policy.parameters(), policy.parameters()))
    assert make_baseline(cfg.replace(baseline="exponential"), policy, problem).beta == 0.5
    with pytest.raises(ValueError, match="unknown baseline None; expected one of rollout, "):
        make_baseline(_tiny_config(), policy, problem)  # not resolved: no baseline chosen


def test_paired_ttest_one_sided_direction():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(200, generator=g) + 5
    better = base - 0.05 - 0.01 * torch.rand(200, generator=g)
    t, p = paired_ttest_one_sided(better, base)
    assert t < 0 and p < 1e-6
    _, p_worse = paired_ttest_one_sided(base + 0.05 + 0.01 * torch.rand(200, generator=g), base)
    assert p_worse > 0.5


def test_reward_scaler_normalises_and_keeps_state():
    sc = RewardScaler("std", 0.0)  # decay 0: the scale is the last batch's
    adv = torch.tensor([[2.0, -2.0], [2.0, -2.0]])
    assert torch.allclose(sc(adv), adv / 2)
    state = sc.state_dict()
    assert set(state) == {"stat", "initialized"} and bool(state["initialized"][0])


def test_reward_scaler_keeps_one_scale_per_variant():
    """Multi-variant normalisation: each group is divided by its own running scale."""
    sc = RewardScaler("std", 0.0)
    adv = torch.tensor([[2.0, -2.0], [10.0, -10.0], [4.0, -4.0]])
    out = sc(adv, torch.tensor([0, 1, 0]))
    # group 0: sqrt(mean(4, 16)) = sqrt(10); group 1: 10
    assert torch.allclose(out[1], torch.tensor([1.0, -1.0]))
    assert torch.allclose(out[0], adv[0] / math.sqrt(10.0))
    # a batch without group 1 leaves its statistic alone
    sc(torch.tensor([[1.0, -1.0]]), torch.tensor([0]))
    assert sc.stat[1] == 100.0 and sc.stat[0] == 1.0
    # checkpoints from before the groups (one scalar) load as group 0
    old = RewardScaler("std", 0.5)
    old.load_state_dict({"stat": torch.tensor(9.0), "initialized": torch.tensor(True)})
    assert old.stat[0] == 9.0 and bool(old.initialized[0]) and not bool(old.initialized[1])


def test_variants_reach_the_generator_and_are_refused_without_variants():
    cfg = _tiny_config(problem="mtvrp", size=8, preset="pomo", variants="CVRP, VRPTW")
    assert cfg.variants == ("CVRP", "VRPTW")
    names = load_validation_set(cfg)["variant"].unique().tolist()
    from nco.envs.mtvrp import VARIANT_NAMES

    assert {VARIANT_NAMES[i] for i in names} == {"CVRP", "VRPTW"}
    with pytest.raises(ValueError, match="has no variants"):
        load_validation_set(_tiny_config(variants=("CVRP",)))


def test_config_resolution_and_validation():
    assert _tiny_config().resolved().baseline == "rollout"
    pomo = TrainConfig(problem="cvrp", size=10, preset="pomo").resolved()
    assert (pomo.baseline, pomo.decoding) == ("shared", "multistart_sampling")
    moe = TrainConfig(preset="pomo", moe_experts=8, moe_k=1, moe_router="loss_free").policy_config()
    assert (moe.moe.num_experts, moe.moe.k, moe.moe.router) == (8, 1, "loss_free")
    assert TrainConfig.from_dict(_tiny_config().to_dict()) == _tiny_config()
    # multi-variant training normalises rewards per variant unless told otherwise
    assert TrainConfig(problem="mtvrp", preset="pomo").resolved().reward_norm == "std"
    assert TrainConfig(problem="cvrp", preset="pomo").resolved().reward_norm == "none"
    assert TrainConfig(problem="mtvrp", reward_norm="none").resolved().reward_norm == "none"
    # a problem changed after construction still gets its own default
    changed = TrainConfig(problem="cvrp", preset="pomo").replace(problem="mtvrp")
    assert changed.resolved().reward_norm == "std"
    mt = TrainConfig(problem="mtvrp", preset="pomo").resolved()
    assert TrainConfig.from_dict(mt.to_dict()) == mt
    with pytest.raises(ValueError, match="reward-norm"):
        TrainConfig(reward_norm="stdev")
    with pytest.raises(ValueError, match="batch-size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"batch_sise": 3})
    with pytest.raises(ValueError, match="d_modle"):
        TrainConfig(policy={"d_modle": 3})


# ----------------------------------------------------------------------------- multi-size
def test_size_range_draws_are_reproducible_and_batches_scale():
    cfg = TrainConfig(problem="cvrp", size="50:500", preset="pomo", train_starts=16, batch_size=64)
    assert cfg.size == (50, 500) and cfg.size_bounds == (50, 500) and cfg.max_size == 500
    draws = [cfg.train_size(e, i) for e in range(3) for i in range(200)]
    assert draws == [cfg.replace().train_size(e, i) for e in range(3) for i in range(200)]
    assert all(50 <= n <= 500 for n in draws) and min(draws) < 80 and max(draws) > 470
    assert len(set(draws)) > 200  # uniform over 451 integers, not a few values
    assert draws != [cfg.replace(seed=7).train_size(e, i) for e in range(3) for i in range(200)]
    # capped starts: p = 2 keeps rows x n^2 constant; every customer as a start: p = 3
    assert cfg.resolved().batch_power == 2.0
    assert [cfg.batch_size_at(n) for n in (50, 100, 200, 500)] == [64, 16, 4, 1]
    assert cfg.replace(train_starts=None).resolved().batch_power == 3.0
    assert cfg.replace(train_starts=None).batch_size_at(100) == 8
    assert cfg.replace(batch_power=1.0).batch_size_at(100) == 32
    assert [cfg.val_batch_size_at(n) for n in (20, 50, 100)] == [500, 500, 125]
    # one size: today's behaviour
    one = TrainConfig(size=20, batch_size=64)
    assert (one.train_size(3, 5), one.batch_size_at(20), one.resolved().batch_power) == (
        20,
        64,
        None,
    )
    assert TrainConfig(size="30:30").size == 30 and TrainConfig(size="30").size == 30


def test_train_starts_decodes_a_random_subset_of_starts():
    cfg = _tiny_config(size=(8, 12), preset="pomo", train_starts=3)
    module = REINFORCEModule(cfg)
    td = module.generator(10)(4, seed=0)
    dc = module.train_decode_config(5, td)
    assert (dc.num_starts, dc.start_choice, dc.seed) == (3, "random", 5)
    assert module.train_decode_config(5, module.generator(8)(2, seed=0)).num_starts == 3
    wide = REINFORCEModule(_tiny_config(size=(2, 4), preset="pomo", train_starts=50))
    assert wide.train_decode_config(1, wide.generator(3)(2, seed=0)).num_starts == 3
    out = module.policy(td, module.env(10), dc)
    assert out.reward.shape == (4, 3)
    # without train_starts: every city, as before
    plain = REINFORCEModule(_tiny_config(size=(8, 12), preset="pomo"))
    assert plain.train_decode_config(5).num_starts is None
    assert plain.policy(td, plain.env(10), plain.train_decode_config(5)).reward.shape == (4, 10)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"size": "500:50"}, "size: expected N or LO:HI with 1 <= LO <= HI, got '500:50'"),
        ({"size": "0:5"}, "size: expected N or LO:HI with 1 <= LO <= HI, got '0:5'"),
        ({"size": "10:x"}, "size: expected N or LO:HI"),
        ({"size": "1:2:3"}, "size: expected N or LO:HI"),
        ({"size": (5, 1)}, "size: expected N or LO:HI"),
        ({"size": 0}, "size: expected N or LO:HI"),
        ({"size": "1:5"}, "size: expected at least 2 cities"),
        ({"size": "8:12", "val_sizes": "8,x"}, "val-sizes: expected comma-separated"),
        ({"size": "8:12", "train_starts": 0}, "train-starts: expected a positive integer"),
        ({"size": "8:12", "train_starts": 4, "num_starts": 4}, "train-starts: cannot be combined"),
        ({"size": "8:12", "batch_power": -1}, "batch-power"),
        ({"size": "8:12", "val_reference": "1,2"}, "val-reference: reference costs are for one"),
        ({"val_sizes": "8,12", "val_data": "v.pt"}, "val-sizes: cannot be combined with val-data"),
    ],
)
def test_bad_size_options_raise_one_clear_error(kw, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        _tiny_config(**kw)


def test_size_range_refuses_rollout_and_train_starts_needs_multistart():
    with pytest.raises(ValueError, match="baseline: rollout needs one training size"):
        _tiny_config(size="8:12").resolved()  # am's default baseline is rollout
    assert _tiny_config(size="8:12", baseline="exponential").resolved().baseline == "exponential"
    with pytest.raises(ValueError, match="train-starts: needs a multistart decoding"):
        _tiny_config(train_starts=4, baseline="exponential").resolved()


def test_size_range_config_round_trip_and_cli(tmp_path):
    cfg = _tiny_config(size="8:12", preset="pomo", train_starts=4, val_sizes=[12, 8, 12])
    assert cfg.val_sizes == (8, 12) and cfg.validation_sizes == (8, 12)
    data = cfg.resolved().to_dict()
    assert data["size"] == [8, 12] and data["val_sizes"] == [8, 12] and data["batch_power"] == 2.0
    assert TrainConfig.from_dict(data) == cfg.resolved()
    import yaml

    assert TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(data))) == cfg.resolved()
    # a range's default validation sizes are (lo, hi); an int size keeps one unlabelled set
    assert _tiny_config(size="8:12", baseline="shared", preset="pomo").resolved().val_sizes == (
        8,
        12,
    )
    assert _tiny_config().resolved().val_sizes is None and not _tiny_config().multi_validation
    args = _parse(["--size", "50:500", "--train-starts", "8", "--val-sizes", "100,500"])
    got = train_cmd.build_config(args, {"preset": "pomo", "problem": "cvrp"})
    assert (got.size, got.train_starts, got.val_sizes) == ((50, 500), 8, (100, 500))
    assert train_cmd.build_config(_parse(["--size", "20"])).size == 20
    y = tmp_path / "run.yaml"
    y.write_text("size: '20:50'\nval-sizes: [20, 50]\ntrain-starts: 5\nbatch-power: 1.5\n")
    got = train_cmd.build_config(_parse([]), train_cmd._read_config_file(y))
    assert (got.size, got.val_sizes, got.train_starts, got.batch_power) == (
        (20, 50),
        (20, 50),
        5,
        1.5,
    )
    assert got.size_label == "20-50"


def test_multi_size_resume_matches_uninterrupted_run(tmp_path):
    """Size range + train_starts (POMO, shared baseline): stop mid-epoch (step 3) and at an epoch
    end (step 4), resume: the same drawn sizes, batches, losses and final weights as one
    uninterrupted run; the checkpoint records size = hi and size_range = [lo, hi]."""
    _warm_up()
    cfg = _tiny_config(
        size="6:12", preset="pomo", train_starts=3, epochs=2, val_size=8, reward_norm="std"
    )
    full = train(cfg, tmp_path / "full", progress_bar=False)
    assert (full.global_step, full.epoch) == (8, 2)
    part = tmp_path / "part"
    assert train(cfg, part, progress_bar=False, stop_after_steps=3).global_step == 3
    assert train(cfg, part, progress_bar=False, resume=True, stop_after_steps=4).global_step == 4
    last = train(cfg, part, progress_bar=False, resume=True)
    assert (last.status, last.global_step) == ("finished", 8)
    a, info = load_model(full.last_checkpoint)
    b, _ = load_model(last.last_checkpoint)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x.float(), y.float(), atol=1e-6, rtol=0), name
    rows_a, rows_b = _rows(tmp_path / "full"), _rows(part)
    sizes = _column(rows_a, "train/size")
    assert sizes == _column(rows_b, "train/size") and len(sizes) == 8
    assert len({v for _, v in sizes}) > 1 and all(6 <= v <= 12 for _, v in sizes)
    assert [cfg.train_size(s // 4, s % 4) for s, _ in sizes] == [int(v) for _, v in sizes]
    assert [v for _, v in _column(rows_a, "train/batch_size")] == [
        float(cfg.batch_size_at(int(v))) for _, v in sizes
    ]
    loss_a, loss_b = _column(rows_a, "train/loss"), _column(rows_b, "train/loss")
    assert [s for s, _ in loss_a] == [s for s, _ in loss_b] == list(range(8))
    assert all(
        math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for (_, x), (_, y) in zip(loss_a, loss_b)
    )
    for key in ("val/cost", "val/cost_n6", "val/cost_n12"):
        va, vb = [v for _, v in _column(rows_a, key)], [v for _, v in _column(rows_b, key)]
        assert len(va) == 2 and all(math.isclose(x, y, rel_tol=1e-5) for x, y in zip(va, vb)), key
    assert (info["size"], info["size_range"], info["train"]["size"]) == (12, [6, 12], [6, 12])
    assert info["train"]["train_starts"] == 3


def test_multi_size_training_improves_every_validation_size(tmp_path):
    """POMO on TSP10:20 with 5 random starts per instance, 24 steps of <= 64 instances: the
    multistart-greedy cost on both fixed validation sets (seed 4321, 100 instances each) must fall
    by at least 10% from the untrained policy. Measured: n10 3.65 -> 2.94, n20 6.40 -> 4.15."""
    cfg = TrainConfig(
        problem="tsp",
        size="10:20",
        preset="pomo",
        policy={"d_model": 32, "num_layers": 1, "num_heads": 4, "d_ff": 64},
        train_starts=5,
        batch_size=64,
        instances_per_epoch=64 * 8,
        epochs=3,
        lr=1e-3,
        val_size=100,
        log_every=5,
        accelerator="cpu",
    )
    val = load_validation_set(cfg)
    assert sorted(val) == [10, 20] and all(td.batch_size[0] == 100 for td in val.values())
    policy = REINFORCEModule(cfg, val_data=val).policy
    prob = get_problem("tsp")
    before = {
        n: decode_costs(policy, td, prob.make_env(num_loc=n), strategy=policy.config.decoding)
        .mean()
        .item()
        for n, td in val.items()
    }
    result = train(cfg, tmp_path / "run", progress_bar=False)
    rows = _rows(tmp_path / "run")
    after = {n: _column(rows, f"val/cost_n{n}")[-1][1] for n in (10, 20)}
    print(f"pomo TSP10:20 validation cost: untrained {before} -> trained {after}")
    for n in (10, 20):
        assert after[n] <= 0.9 * before[n], n
    overall = _column(rows, "val/cost")[-1][1]
    assert math.isclose(overall, (after[10] + after[20]) / 2, rel_tol=1e-5)
    assert result.best_val_cost is not None and result.best_val_cost <= overall + 1e-6


# ----------------------------------------------------------------------------- learning
def test_am_learns_tsp10(tmp_path):
    """am on TSP10, 40 steps of 128 instances (rollout baseline): the greedy cost on a fixed
    validation set (seed 4321, 200 instances) must fall by at least 15% from the untrained policy.
    Measured: 4.18 -> 3.20 (23% lower); optimal TSP10 tours average about 2.87."""
    cfg = TrainConfig(
        problem="tsp",
        size=10,
        preset="am",
        policy={"d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 64},
        batch_size=128,
        instances_per_epoch=128 * 8,
        epochs=5,
        lr=1e-3,
        val_size=200,
        bl_eval_size=200,
        log_every=5,
        accelerator="cpu",
    )
    val = load_validation_set(cfg)
    env = get_problem("tsp").make_env(num_loc=10)
    before = decode_costs(REINFORCEModule(cfg, val_data=val).policy, val, env).mean().item()
    result = train(cfg, tmp_path / "run", progress_bar=False)
    policy, _ = load_model(result.last_checkpoint, problem="tsp")
    after = decode_costs(policy, val, env).mean().item()
    print(
        f"am TSP10 greedy validation cost: untrained {before:.3f} -> trained {after:.3f} ({100 * (1 - after / before):.1f}% lower)"
    )
    assert after <= 0.85 * before
    assert result.best_val_cost is not None and result.best_val_cost <= after + 1e-4


def test_pomo_moe_logs_moe_statistics_and_plots(tmp_path):
    from nco.plotting.training import plot_training

    cfg = TrainConfig(
        problem="cvrp",
        size=8,
        preset="pomo-moe",
        policy=TINY,
        batch_size=8,
        instances_per_epoch=16,
        epochs=1,
        val_size=16,
        log_every=1,
        accelerator="cpu",
    )
    result = train(cfg, tmp_path / "moe", progress_bar=False)
    assert result.status == "finished"
    rows = _rows(tmp_path / "moe")
    keys = [f"moe/load_e{i}" for i in range(4)] + [
        "moe/entropy",
        "moe/dropped_fraction",
        "moe/aux_loss",
        "moe/z_loss",
        "moe/dense_fraction",
    ]
    for key in keys:
        values = [v for _, v in _column(rows, key)]
        assert len(values) == 2 and all(math.isfinite(v) for v in values), key
    loads = [
        sum(float(r[f"moe/load_e{i}"]) for i in range(4)) for r in rows if r.get("moe/load_e0")
    ]
    # Each layer's load sums to 1, except a hierarchical layer that sent every token to its
    # dense branch (all zeros), so the mean over layers lies in (0, 1].
    assert all(0 < s <= 1 + 1e-4 for s in loads)
    png = plot_training(tmp_path / "moe" / "metrics.csv", tmp_path / "moe.png")
    assert png.stat().st_size > 10_000


# ----------------------------------------------------------------------------- resume
def _warm_up() -> None:
    # The first differentiable decode in a process gives log-likelihoods ~1e-6 different from
    # later ones (a torch first-call effect, same actions); warm up so that all runs compared
    # below are in the same regime and can be compared exactly.
    p = get_problem("tsp")
    pol = REINFORCEModule(_tiny_config()).policy
    from nco.policies import DecodeConfig

    pol(
        p.generator(num_loc=8)(4, seed=0), p.make_env(num_loc=8), DecodeConfig(strategy="sampling")
    ).log_likelihood.sum().backward()


def test_resume_matches_uninterrupted_run(tmp_path):
    """Stop at an epoch end (step 4) and mid-epoch (step 6), resume each time: same step counter,
    same losses, same final weights as one uninterrupted run (rollout baseline with its epoch-end
    t-test, reward normalisation buffers, multistep LR decaying after epoch 1)."""
    _warm_up()
    cfg = _tiny_config(reward_norm="std", lr_schedule="multistep", lr_milestones=(0.34,))
    full = train(cfg, tmp_path / "full", progress_bar=False)
    assert (full.global_step, full.epoch) == (12, 3)
    part = tmp_path / "part"
    first = train(cfg, part, progress_bar=False, stop_after_steps=4)
    assert (first.status, first.global_step) == ("interrupted", 4)
    second = train(cfg, part, progress_bar=False, resume=True, stop_after_steps=6)
    assert (second.status, second.global_step) == ("interrupted", 6)
    last = train(cfg, part, progress_bar=False, resume=True)
    assert (last.status, last.global_step, last.epoch) == ("finished", 12, 3)

    a, _ = load_model(full.last_checkpoint)
    b, _ = load_model(last.last_checkpoint)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x.float(), y.float(), atol=1e-6, rtol=0), name
    loss_a, loss_b = (
        _column(_rows(tmp_path / "full"), "train/loss"),
        _column(_rows(part), "train/loss"),
    )
    assert [s for s, _ in loss_b] == list(range(12))
    assert [s for s, _ in loss_a] == [s for s, _ in loss_b]
    assert all(
        math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for (_, x), (_, y) in zip(loss_a, loss_b)
    )
    val_a = [v for _, v in _column(_rows(tmp_path / "full"), "val/cost")]
    val_b = [v for _, v in _column(_rows(part), "val/cost")]
    assert len(val_a) == 3 and all(math.isclose(x, y, rel_tol=1e-5) for x, y in zip(val_a, val_b))
    ckpt = torch.load(last.last_checkpoint, map_location="cpu", weights_only=False)
    assert any(k.startswith("baseline.policy.") for k in ckpt["state_dict"])
    assert any(k.startswith("reward_scaler.") for k in ckpt["state_dict"])


# ----------------------------------------------------------------------------- signals
def test_sigterm_saves_last_checkpoint_and_resume_continues(tmp_path):
    run = tmp_path / "sig"
    cmd = [
        sys.executable,
        "-m",
        "nco.commands.train",
        "--problem",
        "tsp",
        "--size",
        "8",
        *TINY_FLAGS,
        "--batch-size",
        "8",
        "--instances-per-epoch",
        "8",
        "--epochs",
        "100000",
        "--val-size",
        "8",
        "--baseline",
        "exponential",
        "--accelerator",
        "cpu",
        "--checkpoint-every",
        "100000",
        "--no-progress",
        "--out",
        str(run),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT
    )
    try:
        deadline = time.time() + 150
        while not (run / "checkpoints" / "best.ckpt").is_file():
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.time() < deadline, "training did not reach its first validation"
            time.sleep(0.2)
        assert not (run / "checkpoints" / "last.ckpt").exists()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err
    assert "interrupted at step" in out and "--resume" in out
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    step = ckpt["global_step"]
    assert step >= 1
    # Resume with a lower epoch limit (one step per epoch) so that it ends quickly.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nco.commands.train",
            "--resume",
            str(run),
            "--epochs",
            str(step + 2),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished" in done.stdout
    after = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert after["global_step"] == step + 2


def test_signal_handler_sets_flag_and_callback_saves(tmp_path):
    """The in-process path: the handler only flags; the save happens at the step boundary."""
    cfg = _tiny_config(epochs=1, instances_per_epoch=48)
    from lightning.pytorch.callbacks import Callback

    class SendSignal(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 1:
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    result = train(cfg, tmp_path / "int", progress_bar=False, callbacks=[SendSignal()])
    assert (result.status, result.exit_code, result.global_step) == (
        "interrupted",
        128 + signal.SIGINT,
        2,
    )
    assert (
        torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)["global_step"]
        == 2
    )
    assert signal.getsignal(signal.SIGINT) is before


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_is_self_describing(tiny_run, tmp_path):
    policy, info = load_model(tiny_run / "checkpoints" / "last.ckpt", problem="tsp")
    assert not policy.training
    assert (info["problem"], info["size"], info["preset"], info["distribution"]) == (
        "tsp",
        8,
        "am",
        "uniform",
    )
    assert (
        info["policy"]["d_model"] == 16
        and "nco_version" in info
        and info["train"]["batch_size"] == 16
    )
    prob = get_problem("tsp")
    td = prob.generator(num_loc=12)(5, seed=3)
    with torch.no_grad():
        out = policy(td, prob.make_env(num_loc=12), "greedy")
    assert prob.check(td, out.best_actions) == [[]] * 5
    with pytest.raises(
        ValueError, match=r"trained on problem 'tsp', but problem 'cvrp' was requested"
    ):
        load_model(tiny_run / "checkpoints" / "last.ckpt", problem="cvrp")
    # The run directory and the exported slim file load to the same weights.
    slim = export_model(tiny_run / "checkpoints" / "last.ckpt", tmp_path / "tsp8.pt")
    assert slim.stat().st_size < (tiny_run / "checkpoints" / "last.ckpt").stat().st_size / 2
    assert torch.load(slim, weights_only=True)["format"] == "nco-policy"
    p2, info2 = load_model(slim, problem="tsp")
    p3, _ = load_model(tiny_run)  # run dir -> checkpoints/best.ckpt
    for x, y in zip(policy.state_dict().values(), p2.state_dict().values()):
        assert torch.equal(x, y)
    assert info2["policy"] == info["policy"] and p3.config == policy.config
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.ckpt")


def test_run_directory_layout_and_val_gap(tiny_run):
    assert {"config.yaml", "metrics.csv"} <= {p.name for p in tiny_run.iterdir()}
    assert (tiny_run / "checkpoints" / "best.ckpt").is_file()
    rows = _rows(tiny_run)
    cost = _column(rows, "val/cost")[0][1]
    gap = _column(rows, "val/gap")[0][1]
    assert math.isclose(gap, 100 * (cost / 2.5 - 1), rel_tol=1e-4)
    import yaml

    saved = TrainConfig.from_dict(yaml.safe_load((tiny_run / "config.yaml").read_text()))
    assert saved.baseline == "rollout" and saved.policy == TINY


# ----------------------------------------------------------------------------- DDP
def test_ddp_two_cpu_processes(tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "nco.commands.train",
        "--problem",
        "tsp",
        "--size",
        "10",
        *TINY_FLAGS,
        "--batch-size",
        "16",
        "--instances-per-epoch",
        "96",
        "--epochs",
        "2",
        "--val-size",
        "50",
        "--log-every",
        "1",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--no-progress",
        "--out",
        str(run),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished: 6 steps, 2 epochs" in done.stdout  # 96 instances / (16 x 2 ranks) = 3 steps
    rows = _rows(run)
    assert len(_column(rows, "val/cost")) == 2 and len(_column(rows, "train/loss")) == 6
    assert (run / "checkpoints" / "last.ckpt").is_file() and (
        run / "checkpoints" / "best.ckpt"
    ).is_file()


# ----------------------------------------------------------------------------- CLI
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_cmd.configure(parser)
    return parser.parse_args(argv)


def test_config_file_yaml_and_toml_with_flag_overrides(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text(
        "problem: cvrp\nsize: 12\nbatch-size: 7\nepochs: 3\nlr_schedule: cosine\npolicy:\n  d_model: 16\n  num_heads: 2\n"
    )
    cfg = train_cmd.build_config(
        _parse(["--config", str(y), "--epochs", "2", "--d-ff", "24"]),
        train_cmd._read_config_file(y),
    )
    assert (cfg.problem, cfg.size, cfg.batch_size, cfg.epochs, cfg.lr_schedule) == (
        "cvrp",
        12,
        7,
        2,
        "cosine",
    )
    assert cfg.policy == {"d_model": 16, "num_heads": 2, "d_ff": 24}
    t = tmp_path / "run.toml"
    t.write_text('preset = "pomo"\nbaseline = "none"\naugment = 8\n')
    cfg = train_cmd.build_config(
        _parse(["--baseline", "exponential"]), train_cmd._read_config_file(t)
    )
    assert (cfg.preset, cfg.baseline, cfg.augment) == ("pomo", "exponential", 8)
    assert train_cmd.build_config(_parse(["--num-nodes", "3"]), {}).num_nodes == 3


@pytest.mark.parametrize(
    ("argv", "config", "needle"),
    [
        (["--batch-size", "0"], None, "batch-size"),
        (["--augment", "3"], None, "augment"),
        (["--devices", "two"], None, "devices"),
        (["--num-nodes", "0"], None, "num-nodes"),
        ([], "batch-sise: 3\n", "batch_sise"),
        ([], "epochs: [\n", "cannot parse"),
        (["--val-data", "/nonexistent/val.pt"], None, "val.pt"),
        (["--val-reference", "1,2"], None, "reference"),
    ],
)
def test_bad_values_exit_2_with_one_line(tmp_path, capsys, argv, config, needle):
    if config is not None:
        (tmp_path / "c.yaml").write_text(config)
        argv = [*argv, "--config", str(tmp_path / "c.yaml")]
    args = _parse(
        [
            *argv,
            "--size",
            "8",
            *TINY_FLAGS,
            "--val-size",
            "4",
            "--epochs",
            "1",
            "--accelerator",
            "cpu",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    assert train_cmd.run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nco train: error:") and needle in err[0], err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--size", "500:50"], "size: expected N or LO:HI with 1 <= LO <= HI, got '500:50'"),
        (["--size", "8:x"], "size: expected N or LO:HI"),
        (["--size", "8:12"], "baseline: rollout needs one training size"),
        (
            ["--size", "8:12", "--baseline", "shared", "--augment", "8", "--val-sizes", "4,x"],
            "val-sizes",
        ),
        (["--size", "8", "--train-starts", "4", "--baseline", "exponential"], "train-starts"),
    ],
)
def test_bad_size_flags_exit_2_with_one_line(tmp_path, capsys, argv, needle):
    args = _parse(
        [
            *TINY_FLAGS,
            "--val-size",
            "4",
            "--epochs",
            "1",
            "--accelerator",
            "cpu",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
            *argv,
        ]
    )
    assert train_cmd.run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nco train: error:") and needle in err[0], err
    assert not (tmp_path / "r").exists()


def test_unknown_flag_and_bad_choice_exit_2():
    for argv in (["--baselien", "rollout"], ["--baseline", "greedy"], ["--epochs", "x"]):
        with pytest.raises(SystemExit) as exc:
            _parse(argv)
        assert exc.value.code == 2


def test_resume_refuses_to_change_the_model(tiny_run, capsys):
    assert train_cmd.run(_parse(["--resume", str(tiny_run), "--preset", "pomo"])) == 2
    assert "cannot change preset" in capsys.readouterr().err
    assert train_cmd.run(_parse(["--out", str(tiny_run), "--size", "8"])) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_init_from_starts_from_the_checkpoint_weights(tiny_run, tmp_path):
    """Fine-tuning: a new run (other size) starts from a checkpoint's weights, not at random."""
    src, _ = load_model(tiny_run, problem="tsp")
    module = REINFORCEModule(_tiny_config(size=12, init_from=str(tiny_run)))
    for name, value in src.state_dict().items():
        assert torch.equal(module.policy.state_dict()[name], value), name
    fresh = REINFORCEModule(_tiny_config(size=12))
    assert any(
        not torch.equal(fresh.policy.state_dict()[k], v) for k, v in src.state_dict().items()
    )
    # the rollout baseline's frozen copy starts from the same weights
    result = train(
        _tiny_config(size=12, epochs=1, init_from=str(tiny_run)),
        tmp_path / "ft",
        progress_bar=False,
    )
    assert result.status == "finished"


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"problem": "cvrp"}, "trained on problem 'tsp'"),
        ({"policy": {**TINY, "d_model": 32}}, "d_model=16 (run: 32)"),
    ],
    ids=["other-problem", "other-architecture"],
)
def test_init_from_refuses_a_different_problem_or_network(tiny_run, changes, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        REINFORCEModule(_tiny_config(init_from=str(tiny_run), **changes))


def test_init_from_grows_a_network_into_the_distance_bias(tiny_run):
    """A checkpoint without the distance bias starts a biased run at exactly its own function:
    every shared weight copied, the new bias coefficients at 0, same rollouts."""
    src, _ = load_model(tiny_run, problem="tsp")
    cfg = _tiny_config(init_from=str(tiny_run), policy={**TINY, "attn_dist_bias": True})
    grown = REINFORCEModule(cfg).policy.eval()
    state = grown.state_dict()
    alphas = [k for k in state if k.endswith("_alpha")]
    assert alphas and all(float(state[k].abs().max()) == 0.0 for k in alphas)
    for name, value in src.state_dict().items():
        assert torch.equal(state[name], value), name
    problem = get_problem("tsp")
    td = problem.generator(num_loc=8)(4, seed=0)
    env = problem.make_env(num_loc=8)
    with torch.no_grad():
        a = src.eval()(td, env, "multistart_greedy")
        b = grown(td, env, "multistart_greedy")
    torch.testing.assert_close(a.reward, b.reward)
    # other changes are still refused
    with pytest.raises(ValueError, match="only add attn_dist_bias"):
        REINFORCEModule(
            _tiny_config(
                init_from=str(tiny_run),
                policy={**TINY, "attn_dist_bias": True, "decoder_residual_ffn": True},
            )
        )


def test_resume_of_a_finished_run_says_how_to_extend_it(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "done"
    shutil.copytree(tiny_run, run)
    assert train_cmd.run(_parse(["--resume", str(run), "--no-progress"])) == 0
    out = capsys.readouterr().out
    epochs = int(yaml.safe_load((run / "config.yaml").read_text())["epochs"])
    hint = f"nco train --resume {run} --epochs {epochs + max(1, epochs // 2)}"
    assert "finished:" in out and hint in out


# ----------------------------------------------------------------------------- --max-time
class _FakeClock:
    """The run clock of nco.train (``nco.train.callbacks._clock``), advanced by the test: 1 s
    per training step, 10 s per validation (deterministic, no wall time involved)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ticking(clock: _FakeClock, validations: list[int]):
    from lightning.pytorch.callbacks import Callback

    class Tick(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock.now += 1.0

        def on_validation_batch_end(self, trainer, pl_module, *args, **kwargs):
            clock.now += 10.0

        def on_validation_end(self, trainer, pl_module):
            validations.append(trainer.global_step)

    return Tick()


def test_max_time_counts_validation_and_resumes_with_the_time_left(tmp_path, monkeypatch):
    """--max-time is the whole run's clock: validation time counts, a validation that cannot end
    in time is skipped, no validation runs after the limit, and a resume continues the clock."""
    import nco.train.callbacks as train_mod

    clock = _FakeClock()
    monkeypatch.setattr(train_mod, "_clock", clock)
    # 4 steps per epoch, one validation batch (8 instances, decoding batch 500): 10 s
    cfg = _tiny_config(
        epochs=5, batch_size=8, instances_per_epoch=32, val_size=8, baseline="exponential"
    )
    run = tmp_path / "timed"
    validations: list[int] = []
    # t=4: validation (to 14, it took 10 s); t=18 and t=22: 7 s and 3 s left, skipped; at t=25
    # (step 15) the limit: saved and stopped there, no validation after it
    result = train(
        cfg.replace(max_time=25.0),
        run,
        progress_bar=False,
        callbacks=[_ticking(clock, validations)],
    )
    assert (result.status, result.exit_code, result.global_step) == ("time_limit", 0, 15)
    assert validations == [4] and result.elapsed == pytest.approx(25.0)
    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 15
    assert ckpt["callbacks"]["_GracefulStop"]["elapsed"] == pytest.approx(25.0)
    assert max(s for s, _ in _column(_rows(run), "train/loss")) == 14

    # the same limit again: the run has used its time and stops before a step
    again = train(cfg.replace(max_time=25.0), run, resume=True, progress_bar=False)
    assert (again.status, again.global_step) == ("time_limit", 15)

    # a larger limit continues the clock at 25 s: step 16 (t=26) ends epoch 4 with 14 s left, so
    # its validation runs (to t=36); the last step (20, t=40) finishes the run at the limit
    validations.clear()
    last = train(
        cfg.replace(max_time=40.0),
        run,
        resume=True,
        progress_bar=False,
        callbacks=[_ticking(clock, validations)],
    )
    assert (last.status, last.global_step, last.epoch) == ("finished", 20, 5)
    assert validations == [16] and last.elapsed == pytest.approx(40.0)
    assert [s for s, _ in _column(_rows(run), "train/loss")] == list(range(20))


def test_cli_reports_the_time_limit_and_how_to_train_on(tmp_path, capsys, monkeypatch):
    import nco.train.callbacks as train_mod

    clock = _FakeClock()
    monkeypatch.setattr(train_mod, "_clock", clock)
    monkeypatch.setattr(train_mod, "_GracefulStop", _tick_per_step(train_mod._GracefulStop, clock))
    run = tmp_path / "cli"
    argv = [
        "--size", "8", *TINY_FLAGS, "--batch-size", "8", "--instances-per-epoch", "32",
        "--epochs", "100", "--val-size", "8", "--baseline", "exponential",
        "--accelerator", "cpu", "--max-time", "6", "--out", str(run), "--no-progress",
    ]  # fmt: skip
    assert train_cmd.run(_parse(argv)) == 0
    out = capsys.readouterr().out
    assert "stopped at the time limit (6 s used of --max-time 6) at step 6" in out, out
    assert f"nco train --resume {run} --max-time 12" in out


def _tick_per_step(base, clock: _FakeClock):
    """_GracefulStop whose clock advances 1 s per training step (for runs started by the CLI)."""

    class Ticking(base):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock.now += 1.0
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    Ticking.__qualname__ = base.__qualname__
    return Ticking


# ----------------------------------------------------------------------------- progress bar
@pytest.mark.parametrize("bar_kind", ["tqdm", "rich"])
def test_resumed_epoch_progress_bar_has_total_position_and_rate(tmp_path, bar_kind):
    """Lightning skips on_train_epoch_start when it restarts mid-epoch: the resumed epoch's bar
    must still show its total and start at the resumed batch (the rate counts from there)."""
    from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar

    if bar_kind == "rich":
        pytest.importorskip("rich")
    make_bar = TQDMProgressBar if bar_kind == "tqdm" else RichProgressBar
    seen: list[tuple] = []

    class Spy(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            bar = trainer.progress_bar_callback
            if isinstance(bar, TQDMProgressBar):
                tq = bar.train_progress_bar
                seen.append((batch_idx, tq.total, tq.n, tq.initial))
            else:
                task = bar.progress.tasks[bar.train_progress_bar_id]
                # progress samples since the bar (re)started: one step each, not the skipped ones
                steps = sum(s.completed for s in task._progress)
                seen.append((batch_idx, task.total, task.completed, task.completed - steps))

    cfg = _tiny_config(epochs=1, batch_size=8, instances_per_epoch=48, baseline="exponential")
    run = tmp_path / "bar"
    train(cfg, run, progress_bar=False, stop_after_steps=2)
    train(cfg, run, resume=True, callbacks=[make_bar(), Spy()])
    # the resumed epoch: batches 2..5 of 6, total known, counted from batch 2
    assert seen[0] == (2, 6, 3, 2), seen
    assert seen[-1] == (5, 6, 6, 2), seen


# ----------------------------------------------------------------------------- quiet log
_NOISE = (
    "GPU available:",
    "TPU available:",
    "LOCAL_RANK:",
    "Tip:",
    "litlogger",
    "`Trainer.fit` stopped",
    "smaller than the logging interval",
    "exists and is not empty",
    "LeafSpec",
    "Restoring states",
    "Restored all states",
    "does not have many workers",
)


def test_cli_training_log_has_no_lightning_noise(tmp_path):
    """A tiny CLI run and its resume print none of Lightning's irrelevant lines on stderr (an
    epoch of 4 steps with --log-every 10 used to warn about the logging interval)."""
    run = tmp_path / "quiet"
    base = [sys.executable, "-m", "nco.commands.train"]
    flags = [
        "--size", "8", *TINY_FLAGS, "--batch-size", "8", "--instances-per-epoch", "32",
        "--val-size", "8", "--baseline", "exponential", "--accelerator", "cpu",
    ]  # fmt: skip
    for argv in (
        [*flags, "--epochs", "1", "--out", str(run)],
        ["--resume", str(run), "--epochs", "2"],
    ):
        done = subprocess.run(
            [*base, *argv], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "finished:" in done.stdout
        noise = [line for line in done.stderr.splitlines() if any(n in line for n in _NOISE)]
        assert not noise, noise


def test_real_warnings_are_kept_and_filters_end_with_the_run(tmp_path, caplog):
    """Only the known-irrelevant messages are dropped, and only while train() runs."""
    import logging
    import warnings

    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

    class Speak(Callback):
        def on_train_start(self, trainer, pl_module):
            rank_zero_warn("a real problem")
            rank_zero_info("a real notice")
            rank_zero_info("GPU available: False, used: False")

    cfg = _tiny_config(epochs=1, batch_size=8, instances_per_epoch=16, baseline="exponential")
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg.replace(log_every=50), tmp_path / "w", progress_bar=False, callbacks=[Speak()])
    messages = [str(w.message) for w in caught]
    assert "a real problem" in messages
    assert not [m for m in messages if any(n in m for n in _NOISE)], messages
    infos = [r.getMessage() for r in caplog.records]
    assert "a real notice" in infos
    assert not [m for m in infos if any(n in m for n in _NOISE)], infos
    # after the run, nothing stays silenced
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        warnings.warn("Checkpoint directory /x exists and is not empty.", UserWarning, stacklevel=1)
    assert len(after) == 1
