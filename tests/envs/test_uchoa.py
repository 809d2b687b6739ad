"""Uchoa et al. (2017) X-like CVRP generator: contract, per-attribute rules, the X files, env, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

import nco.envs as E
from nco.cli import main
from nco.envs.common import make_rng
from nco.envs.cvrp import CVRPGenerator
from nco.envs.uchoa import CUSTOMERS, DEMANDS, UchoaGenerator, implied_route_size
from tests.envs.helpers import random_rollout

P = E.get_problem("cvrp")


def grid_data(td: TensorDict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid coordinates [B, N, 2] int, customer demands [B, n] int, capacities [B]) of a batch."""
    grid = td["locs"].double().numpy() * 1000
    cap = td["capacity"].numpy()
    dem = td["demand"][:, 1:].double().numpy() * cap[:, None]
    np.testing.assert_allclose(grid, grid.round(), atol=1e-3)
    np.testing.assert_allclose(dem, dem.round(), atol=1e-4)
    return grid.round().astype(np.int64), dem.round().astype(np.int64), cap


def route_size_interval(dem: np.ndarray, cap: float) -> tuple[float, float]:
    """The r with ceil(r * sum / n) == cap: the half-open interval ((cap - 1) n / sum, cap n / sum]."""
    n, total = dem.size, float(dem.sum())
    return (cap - 1) * n / total, cap * n / total


def nn_distance(pts: np.ndarray) -> float:
    """Mean distance from each point [n, 2] to its nearest other point."""
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return float(d.min(1).mean())


# ----------------------------------------------------------------------------- contract
def test_keys_dtypes_and_scaling_match_cvrp_generator():
    td = UchoaGenerator(num_loc=50)(16, seed=0)
    ref = CVRPGenerator(num_loc=50)(16, seed=0)
    assert set(td.keys()) == set(ref.keys()) and td.batch_size == ref.batch_size
    for k in ref.keys():
        assert td[k].shape == ref[k].shape and td[k].dtype == ref[k].dtype, k
    assert td["locs"].min() >= 0 and td["locs"].max() <= 1
    assert torch.all(td["demand"][:, 0] == 0) and td["demand"][:, 1:].min() > 0
    assert td["demand"].max() <= 1  # capacity >= every demand: every instance is feasible
    assert len(set(td["capacity"].tolist())) > 1  # capacity varies per instance


def test_seeded_and_pure():
    g = UchoaGenerator(num_loc=40)
    a, b, c = g(12, seed=1), g(12, seed=1), g(12, seed=2)
    for k in a.keys():
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["locs"], c["locs"])
    # a torch generator drives it too: same state, same batch; and it advances
    r1, r2 = make_rng(5, "cpu"), make_rng(5, "cpu")
    x, y = g(4, rng=r1), g(4, rng=r2)
    assert torch.equal(x["locs"], y["locs"]) and torch.equal(x["capacity"], y["capacity"])
    assert not torch.equal(g(4, rng=r1)["locs"], x["locs"])


def test_bad_parameters():
    with pytest.raises(ValueError, match="num_loc"):
        UchoaGenerator(num_loc=0)
    with pytest.raises(ValueError, match="depot"):
        UchoaGenerator(depot="corner")
    with pytest.raises(ValueError, match="customers"):
        UchoaGenerator(customers="gaussian")
    with pytest.raises(ValueError, match="demand"):
        UchoaGenerator(demand="1-9")
    with pytest.raises(ValueError, match="route_size"):
        UchoaGenerator(route_size=(10.0, 12.0))  # the default mode 6 lies outside
    with pytest.raises(ValueError, match="route_size"):
        UchoaGenerator(route_size=(0.5, 25.0))


# ----------------------------------------------------------------------------- positions
@pytest.mark.parametrize(("depot", "where"), [("central", 500), ("eccentric", 0)])
def test_fixed_depots(depot, where):
    grid, _, _ = grid_data(UchoaGenerator(num_loc=20, depot=depot)(8, seed=3))
    assert np.all(grid[:, 0] == where)


def test_random_and_mixed_depots():
    grid, _, _ = grid_data(UchoaGenerator(num_loc=10, depot="random")(32, seed=3))
    assert len({tuple(p) for p in grid[:, 0]}) == 32 and grid[:, 0].min() >= 0
    grid, _, _ = grid_data(UchoaGenerator(num_loc=10)(60, seed=3))
    kinds = {
        "central" if tuple(p) == (500, 500) else "eccentric" if tuple(p) == (0, 0) else "r"
        for p in grid[:, 0]
    }
    assert kinds == {"central", "eccentric", "r"}


@pytest.mark.parametrize("customers", [*CUSTOMERS, "mix"])
def test_customers_on_distinct_grid_points_off_the_depot(customers):
    grid, _, _ = grid_data(UchoaGenerator(num_loc=300, customers=customers)(6, seed=4))
    assert grid.min() >= 0 and grid.max() <= 1000
    for g in grid:
        cells = {tuple(p) for p in g}
        assert len(cells) == g.shape[0]  # customers distinct, none on the depot


def test_clustered_customers_are_clustered():
    """Mean nearest-neighbour distance: clustered < random-clustered < random (n = 200)."""
    nn = {}
    for kind in CUSTOMERS:
        grid, _, _ = grid_data(UchoaGenerator(num_loc=200, customers=kind)(16, seed=5))
        nn[kind] = np.mean([nn_distance(g[1:].astype(float)) for g in grid])
    # Poisson points: 0.5 / sqrt(density) = 0.5 * 1000 / sqrt(200) = 35.4
    assert nn["random"] == pytest.approx(35.4, rel=0.1)
    assert nn["clustered"] < 0.85 * nn["random-clustered"] < 0.85 * nn["random"]


def test_tiny_instances_cap_the_seeds():
    td = UchoaGenerator(num_loc=3, customers="clustered")(20, seed=6)
    grid, _, _ = grid_data(td)
    assert all(len({tuple(p) for p in g}) == 4 for g in grid)


# ----------------------------------------------------------------------------- demands, capacity
RANGES = {
    "unitary": (1, 1),
    "1-10": (1, 10),
    "5-10": (5, 10),
    "1-100": (1, 100),
    "50-100": (50, 100),
}


@pytest.mark.parametrize("demand", DEMANDS)
def test_demands_in_their_distribution(demand):
    grid, dem, cap = grid_data(UchoaGenerator(num_loc=200, demand=demand)(24, seed=7))
    cust = grid[:, 1:]
    if demand in RANGES:
        lo, hi = RANGES[demand]
        assert dem.min() == lo and dem.max() == hi  # the whole range, and nothing outside
    elif demand == "quadrant":
        odd = (cust[..., 0] < 500) == (cust[..., 1] < 500)
        assert dem[odd].min() == 51 and dem[odd].max() == 100
        assert dem[~odd].min() == 1 and dem[~odd].max() == 50
    else:  # small-large: U{1..10}, and U{50..100} for about 1.5 customers per route
        large = dem > 10
        assert dem[~large].min() == 1 and dem[~large].max() == 10
        assert dem[large].min() == 50 and dem[large].max() == 100
        for d, q, big in zip(dem, cap, large):
            if q > d.max():  # not raised to the largest demand: q pins r down
                lo, hi = route_size_interval(d, q)
                n = d.size
                assert math.ceil(1.5 * n / hi) - 2 <= big.sum() <= math.ceil(1.5 * n / lo) - 2


def test_capacity_rule_and_route_sizes():
    """Q = max(max q, ceil(r sum q / n)) (floor(r) for unitary demands) with r in [3, 25]."""
    td = UchoaGenerator(num_loc=60)(600, seed=8)
    _, dem, cap = grid_data(td)
    sizes = []
    for d, q in zip(dem, cap):
        assert q >= d.max()
        if (d == 1).all():
            assert 3 <= q <= 25  # floor(r)
        elif q > d.max():
            lo, hi = route_size_interval(d, q)
            assert lo < 25 and hi >= 3  # some r in [3, 25] gives this capacity
        sizes.append(implied_route_size(d, q))
    sizes = np.array(sizes)
    assert sizes.min() >= 3 and sizes.max() <= 26
    # Triangular(3, 6, 25): mean 11.33, P(r < 6) = 3 / 22
    assert sizes.mean() == pytest.approx(34 / 3, abs=0.8)
    assert np.mean(sizes < 6) == pytest.approx(3 / 22, abs=0.05)


def test_demand_mix_covers_every_distribution():
    _, dem, _ = grid_data(UchoaGenerator(num_loc=100)(70, seed=9))
    seen = set()
    for d in dem:
        lo, hi = int(d.min()), int(d.max())
        if hi <= 10 and (d > 0).all():
            seen.add("unitary" if hi == 1 else "5-10" if lo >= 5 else "1-10")
        elif ((d > 10) & (d < 50)).any():
            seen.add("1-100 or quadrant")
        elif lo >= 50:
            seen.add("50-100")
        else:
            seen.add("small-large")
    assert seen == {"unitary", "1-10", "5-10", "1-100 or quadrant", "50-100", "small-large"}


# ----------------------------------------------------------------------------- the X files
@pytest.fixture(scope="module")
def x_instances(shared_data: Path) -> list[E.Instance]:
    """The X instances (Uchoa et al. 2017) of the benchmark pack."""
    files = sorted((shared_data / "cvrplib-x").glob("X-*.vrp"))
    if not files:
        pytest.skip(f"no X instances (X-*.vrp) under {shared_data / 'cvrplib-x'}")
    return [E.load(f) for f in files]


def x_demand_kinds(inst: E.Instance) -> set[str]:
    """The generator's demand distributions that could have produced this X instance."""
    d = inst.demand[1:]
    xy = inst.coords[1:]
    kinds = {k for k, (lo, hi) in RANGES.items() if lo <= d.min() and d.max() <= hi}
    odd = (xy[:, 0] < 500) == (xy[:, 1] < 500)
    if np.all(odd == (d > 50)):
        kinds.add("quadrant")
    if np.all((d <= 10) | (d >= 50)) and (d <= 10).any() and (d >= 50).any():
        kinds.add("small-large")
    return kinds


def test_x_files_lie_in_the_generators_support(x_instances):
    for inst in x_instances:
        assert inst.coords is not None and inst.demand is not None and inst.capacity is not None
        xy, d, q = inst.coords, inst.demand[1:], inst.capacity
        assert np.all(xy == xy.round()) and xy.min() >= 0 and xy.max() <= 1000, inst.name
        assert len({tuple(p) for p in xy}) == len(xy), inst.name  # distinct, none on the depot
        kinds = x_demand_kinds(inst)
        assert kinds, f"{inst.name}: demands [{d.min()}, {d.max()}] fit no distribution"
        lo, hi = route_size_interval(d, q)
        assert lo < 25 and hi >= 3, f"{inst.name}: capacity {q} needs r in ({lo}, {hi}]"
        if "small-large" in kinds:
            n, big = d.size, int((d >= 50).sum())
            assert math.ceil(1.5 * n / hi) - 2 <= big <= math.ceil(1.5 * n / lo) - 2, inst.name


def test_generated_ranges_cover_the_x_files(x_instances):
    x_sizes = [implied_route_size(i.demand[1:], i.capacity) for i in x_instances]
    x_dem = np.concatenate([i.demand[1:] for i in x_instances])
    x_xy = np.concatenate([i.coords for i in x_instances])
    grid, dem, cap = grid_data(UchoaGenerator(num_loc=12)(4000, seed=10))
    sizes = [implied_route_size(d, q) for d, q in zip(dem, cap)]
    assert min(sizes) <= min(x_sizes) and max(sizes) >= max(x_sizes)
    assert dem.min() <= x_dem.min() and dem.max() >= x_dem.max()
    assert grid.min() <= x_xy.min() and grid.max() >= x_xy.max()
    print(
        f"implied route size: X {min(x_sizes):.2f}..{max(x_sizes):.2f} (mean "
        f"{np.mean(x_sizes):.2f}), generated {min(sizes):.2f}..{max(sizes):.2f} (mean "
        f"{np.mean(sizes):.2f})"
    )


# ----------------------------------------------------------------------------- env, problems, CLI
def test_cvrp_distribution_uchoa_delegates():
    g = P.generator(num_loc=30, distribution="uchoa")
    a, b = g(5, seed=11), UchoaGenerator(num_loc=30)(5, seed=11)
    for k in a.keys():
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(ValueError, match="per instance"):
        _ = g.vehicle_capacity
    with pytest.raises(ValueError, match="uchoa"):
        P.generator(num_loc=30, distribution="uchoa", capacity=50)
    with pytest.raises(ValueError, match="uchoa"):
        P.generator(num_loc=30, distribution="uchoa", max_demand=20)


def test_env_steps_uchoa_batches_to_completion():
    check_env_specs(E.make("cvrp", num_loc=12, distribution="uchoa", seed=0))
    env = E.make("cvrp", num_loc=40, distribution="uchoa", seed=0)
    data = env.generator(64, seed=12)
    actions, ret = random_rollout(env, data)
    assert all(not v for v in P.check(data, actions))
    torch.testing.assert_close(ret, -P.cost(data, actions).double(), rtol=1e-5, atol=1e-4)
    assert env.reset(TensorDict(batch_size=[3]))["capacity"].shape == (3,)


@pytest.mark.parametrize("problem", ["tsp", "mtvrp"])
def test_other_problems_refuse_uchoa(problem):
    with pytest.raises(ValueError, match="distribution"):
        E.get_problem(problem).generator(num_loc=10, distribution="uchoa")


def test_cvrptw_refuses_uchoa():
    with pytest.raises(ValueError, match="distribution"):
        E.get_problem("cvrptw").generator(num_loc=10, distribution="uchoa")


def test_cli_generate_writes_per_instance_capacities(tmp_path, capsys):
    out = tmp_path / "x"
    args = ["generate", "--problem", "cvrp", "--distribution", "uchoa", "--size", "40"]
    assert main([*args, "--num", "3", "--seed", "1", "--out", str(out)]) == 0
    files = sorted(out.glob("*.vrp"))
    assert len(files) == 3
    td = P.generator(num_loc=40, distribution="uchoa")(3, seed=1)
    _, dem, cap = grid_data(td)
    for i, f in enumerate(files):
        inst = E.load(f)
        assert inst.capacity == cap[i]
        np.testing.assert_array_equal(inst.demand, np.concatenate([[0], dem[i]]))
        routes = [[c] for c in range(1, 41)]
        assert E.Solution.from_routes(inst, routes).feasible
    name, saved = E.load_dataset(next(out.glob("*.pt")))
    assert name == "cvrp" and torch.equal(saved["capacity"], td["capacity"])
