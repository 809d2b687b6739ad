"""Solomon-like CVRPTW generator: contract, feasibility by construction, the shared Solomon files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nco.envs as E
from nco.envs.cvrptw import CVRPTWGenerator
from nco.envs.solomon import CLASSES, SolomonGenerator
from tests.envs.helpers import random_rollout

P = E.get_problem("cvrptw")


def test_keys_shapes_and_seeding():
    td = SolomonGenerator(30)(5, seed=7)
    assert td["locs"].shape == (5, 31, 2) and td["time_windows"].shape == (5, 31, 2)
    assert td["demand"].shape == td["service_time"].shape == (5, 31)
    assert td["capacity"].dtype == torch.float64 and td["capacity"].shape == (5,)
    again = SolomonGenerator(30)(5, seed=7)
    for k in td.keys():
        torch.testing.assert_close(td[k], again[k])
    assert not torch.equal(SolomonGenerator(30)(5, seed=8)["locs"], td["locs"])
    # the torch generator drives it too (training's data stream)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(SolomonGenerator(30)(4, rng=g1)["locs"], SolomonGenerator(30)(4, rng=g2)["locs"])


def test_every_customer_can_be_served_alone():
    """Earliest arrival d_i <= window end, and serving at the latest start still returns before
    the depot closes: so one vehicle per customer is always a feasible plan."""
    td = SolomonGenerator(200)(64, seed=1)
    locs, tw, svc = td["locs"].double(), td["time_windows"].double(), td["service_time"].double()
    d0 = (locs[:, 1:] - locs[:, :1]).norm(dim=-1)
    horizon = tw[:, 0, 1:2]
    assert (tw[:, 1:, 0] >= 0).all() and (tw[:, 1:, 0] <= tw[:, 1:, 1]).all()
    assert (d0 <= tw[:, 1:, 1] + 1e-5).all()
    assert (tw[:, 1:, 1] + svc[:, 1:] + d0 <= horizon + 1e-5).all()
    assert (td["demand"][:, 1:] > 0).all() and (td["demand"][:, 1:] <= 1).all()
    assert ((td["locs"] >= 0) & (td["locs"] <= 1)).all()


def test_classes_follow_their_table():
    for name, (horizon, service, capacity, _, step) in CLASSES.items():
        td = SolomonGenerator(50, classes=(name,))(16, seed=2)
        h = td["time_windows"][:, 0, 1].double()
        assert ((h >= 0.9 * horizon - 1e-4) & (h <= 1.1 * horizon + 1e-4)).all(), name
        torch.testing.assert_close(td["service_time"][:, 1:], torch.full((16, 50), service))
        assert (td["capacity"] == capacity).all()
        units = (td["demand"][:, 1:].double() * capacity).round()
        assert (units % step == 0).all(), name


def test_through_the_cvrptw_generator_and_env():
    gen = CVRPTWGenerator(40, "solomon")
    with pytest.raises(ValueError, match="per instance"):
        _ = gen.vehicle_capacity
    with pytest.raises(ValueError, match="defaults"):
        CVRPTWGenerator(40, "solomon", max_time=6.0)
    with pytest.raises(ValueError, match="classes"):
        SolomonGenerator(10, classes=("R3",))
    assert "solomon" in P.distributions
    env = E.make("cvrptw", num_loc=40, distribution="solomon")
    data = gen(6, seed=4)
    actions, ret = random_rollout(env, data)
    assert all(not v for v in P.check(data, actions))
    torch.testing.assert_close(ret, -P.cost(data, actions).double(), rtol=1e-5, atol=1e-4)


def _file_stats(path: Path) -> tuple[float, float, float]:
    td = E.load(path).to_tensordict()
    tw = td["time_windows"][0].double()
    return float(tw[0, 1]), float(td["service_time"][0, 1]), float(td["demand"][0, 1:].mean())


@pytest.mark.parametrize("cls", list(CLASSES))
def test_statistics_match_the_shared_solomon_files(shared_data, cls):
    """Per class: horizon, service time and mean demand (in the network's units) within the
    generator's stated ranges of the files' values; window width medians inside the sampled range."""
    files = sorted((shared_data / "solomon").glob(f"{cls}[0-9]*.txt"))
    if not files:
        pytest.skip(f"no {cls} files in {shared_data / 'solomon'}")
    stats = np.array([_file_stats(f) for f in files])
    td = SolomonGenerator(100, classes=(cls,))(64, seed=5)
    horizon = td["time_windows"][:, 0, 1].double().numpy()
    assert horizon.min() <= stats[:, 0].mean() <= horizon.max()
    np.testing.assert_allclose(float(td["service_time"][0, 1]), stats[:, 1].mean(), rtol=0.02)
    gen_demand = float(td["demand"][:, 1:].mean())
    assert 0.6 <= gen_demand / stats[:, 2].mean() <= 1.7, (gen_demand, stats[:, 2].mean())
    # windowed customers: median width relative to the horizon within the files' span
    tw = td["time_windows"][:, 1:].double()
    rel = ((tw[..., 1] - tw[..., 0]) / td["time_windows"][:, :1, 1].double()).median(1).values
    assert 0.02 <= float(rel.min()) and float(rel.max()) <= 1.0
