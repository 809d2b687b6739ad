"""The mtvrp generators that look like the shared variant files: ``distribution="vrpb"``
(Queiroga et al. 2020 on X-like instances) and ``distribution="mdvrptw"`` (Cordeau / Vidal
multi-depot VRPTW with a duration limit).

Seeding and shapes; every generated customer servable alone in every variant of the data;
rollouts pass both checkers; and the generated statistics, in the network's units, against the
shared files converted by ``from_instance`` (each within the tolerance stated at its test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nco.envs as E
from nco.envs import Solution, load, mtvrp
from nco.envs.mtvrp import (
    ALL_VARIANT_NAMES,
    MDVRPTW_DEPOTS,
    MTVRP_DISTRIBUTIONS,
    VRPB_LINEHAUL_SHARES,
    MTVRPEnv,
    MTVRPGenerator,
)
from tests.envs.helpers import random_rollout

P = E.get_problem("mtvrp")
FAMILY = ("vrpb", "mdvrptw")


def greedy_rollout(env: MTVRPEnv, data) -> torch.Tensor:
    """Nearest allowed customer, the depot only when none is allowed: long routes that run
    into every limit -> actions [B, T]."""
    td = env.reset(data.clone())
    acts = []
    while not td["done"].all():
        mask = td["action_mask"]
        cust = mask & ~mtvrp.is_depot_node(td)
        d = E.common.distance_rows(td, td["current_node"])
        near = torch.where(cust, d, torch.full_like(d, float("inf"))).argmin(1)
        td["action"] = torch.where(cust.any(1), near, mask.float().argmax(1))
        acts.append(td["action"])
        td = env._step(td)
    return torch.stack(acts, 1)


def instance_plan(td, b: int, row: list[int]) -> tuple[E.Instance, list[list[int]], list[int]]:
    """Row b as an Instance and its action sequence as (routes, depots) of that Instance: a
    single-depot row of an MD batch loses its repeated depot slots in to_instance."""
    inst = P.to_instance(td[b : b + 1])
    k = int(td["num_depots"][b])
    if inst.num_depots == 1 and k > 1:
        row = [0 if a < k else a - k + 1 for a in row]
    routes, depots = P.tours_to_depot_routes(row, inst.num_depots)
    return inst, routes, depots


# ----------------------------------------------------------------------------- registry
def test_distributions_are_registered():
    assert P.distributions == MTVRP_DISTRIBUTIONS
    assert set(FAMILY) <= set(P.distributions)
    assert MTVRPGenerator(5, distribution="vrpb").variants == ("VRPB",)
    assert MTVRPGenerator(5, distribution="mdvrptw").variants == ("MDVRPLTW",)
    assert MTVRPGenerator(5).variants == mtvrp.VARIANT_NAMES  # unchanged default
    with pytest.raises(ValueError, match="capacity"):
        MTVRPGenerator(5, distribution="vrpb", capacity=50)
    with pytest.raises(ValueError, match="backhaul_ratio"):
        MTVRPGenerator(5, distribution="vrpb", backhaul_ratio=0.5)
    with pytest.raises(ValueError, match="max_time"):
        MTVRPGenerator(5, distribution="mdvrptw", max_time=6.0)
    with pytest.raises(ValueError, match="draws the capacity per instance"):
        _ = MTVRPGenerator(5, distribution="mdvrptw").vehicle_capacity


# ----------------------------------------------------------------------------- seeding, shapes
@pytest.mark.parametrize("dist", FAMILY)
def test_seeding(dist):
    gen = MTVRPGenerator(12, distribution=dist)
    a, b, c = gen(8, seed=3), gen(8, seed=3), gen(8, seed=4)
    assert set(a.keys()) == set(b.keys())
    for key in a.keys():
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["demand_linehaul"], c["demand_linehaul"])
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(gen(4, rng=g1)["locs"], gen(4, rng=g2)["locs"])
    # the variants are drawn after the data: the same customers whatever the variants asked
    # (for the same depot count: mdvrptw draws it first)
    one = MTVRPGenerator(12, distribution=dist, num_depots=4)(8, seed=3)
    other = MTVRPGenerator(12, distribution=dist, variants=ALL_VARIANT_NAMES, num_depots=4)(8, seed=3)
    assert torch.equal(other["locs"][:, -12:], one["locs"][:, -12:])
    assert torch.equal(other["capacity"], one["capacity"])


def test_vrpb_shapes_and_units():
    n, b = 30, 16
    td = MTVRPGenerator(n, distribution="vrpb")(b, seed=1)
    assert td["locs"].shape == (b, n + 1, 2) and td["capacity"].dtype == torch.float64
    assert mtvrp.variant_names(td) == ["VRPB"] * b
    lh, bh = td["demand_linehaul"], td["demand_backhaul"]
    assert (lh[:, 0] == 0).all() and (bh[:, 0] == 0).all()
    assert ((lh > 0) ^ (bh > 0))[:, 1:].all()  # each customer exactly one kind
    # integer demands over a per-instance capacity (X-like)
    q = (lh + bh) * td["capacity"][:, None].float()
    torch.testing.assert_close(q, q.round(), atol=1e-3, rtol=0)
    assert len(set(td["capacity"].tolist())) > 1
    # scaled as from_instance scales a file: min 0 on each axis, largest extent 1
    locs = td["locs"]
    torch.testing.assert_close(locs.amin(1), torch.zeros(b, 2))
    torch.testing.assert_close((locs.amax(1) - locs.amin(1)).amax(-1), torch.ones(b))


def test_mdvrptw_shapes_and_units():
    n, b = 20, 8
    gen = MTVRPGenerator(n, distribution="mdvrptw")
    for seed in range(6):
        td = gen(b, seed=seed)
        k = int(td["num_depots"][0])
        assert k in dict(MDVRPTW_DEPOTS) and (td["num_depots"] == k).all()
        assert td["locs"].shape == (b, n + k, 2) and td["time_windows"].shape == (b, n + k, 2)
        assert mtvrp.variant_names(td) == ["MDVRPLTW"] * b
        assert torch.equal(td["duration_limit"], td["distance_limit"])  # the L feature's value
        assert (td["service_time"][:, :k] == 0).all() and (td["service_time"][:, k:] > 0).all()
    fixed = MTVRPGenerator(n, distribution="mdvrptw", num_depots=2)(b, seed=0)
    assert fixed["locs"].shape == (b, n + 2, 2) and (fixed["num_depots"] == 2).all()
    # other variants of the same data: attributes switched off, the depot slots kept
    mixed = MTVRPGenerator(n, distribution="mdvrptw", variants=ALL_VARIANT_NAMES, num_depots=4)(64, seed=1)
    off = ~mixed["has_distance_limit"]
    assert torch.isinf(mixed["duration_limit"][off]).all()
    assert torch.isinf(mixed["distance_limit"][off]).all()


# ----------------------------------------------------------------------------- solvability
@pytest.mark.parametrize("dist", FAMILY)
def test_every_customer_is_servable_alone_in_every_variant(dist):
    """Each customer on a route of its own from depot 0 passes the tensor checker (capacity,
    windows, return, distance and duration limits) whatever the variant; as an Instance too."""
    gen = MTVRPGenerator(10, distribution=dist, variants=ALL_VARIANT_NAMES, num_depots=3)
    td = gen(96, seed=2)
    k = int(td["num_depots"][0])
    n = td["locs"].shape[1]
    tours = torch.stack([torch.tensor([j, 0]) for j in range(k, n)])  # [C, 2]
    for b in range(td.batch_size[0]):
        row = td[b : b + 1].expand(n - k).clone()
        broken = [x for v in mtvrp.check(row, tours) for x in v if x.kind != "missing"]
        assert not broken, (b, mtvrp.variant_names(row)[0], broken[:2])
        inst, _, _ = instance_plan(td, b, [k, 0])  # builds (and validates) the Instance
        shift = 0 if inst.num_depots > 1 else k - 1
        for j in range(k, n):
            sol = Solution.from_routes(inst, [[j - shift]], depots=[0])
            assert all(v.kind == "missing" for v in sol.violations), (b, j, sol.violations)


@pytest.mark.parametrize("dist", FAMILY)
def test_rollouts_pass_both_checkers(dist):
    gen = MTVRPGenerator(12, distribution=dist, variants=ALL_VARIANT_NAMES)
    td = gen(48, seed=5)
    env = MTVRPEnv(gen)
    for acts in (random_rollout(env, td, seed=1)[0], greedy_rollout(env, td)):
        assert all(not v for v in mtvrp.check(td, acts))
        for b in range(td.batch_size[0]):
            inst, routes, depots = instance_plan(td, b, acts[b].tolist())
            sol = Solution.from_routes(inst, routes, depots=depots)
            assert sol.feasible, (b, mtvrp.variant_names(td[b : b + 1]), sol.violations[:3])


def test_generated_instances_round_trip_through_files(tmp_path: Path):
    for dist in FAMILY:
        td = MTVRPGenerator(8, distribution=dist)(4, seed=0)
        for b in range(4):
            inst = P.to_instance(td[b : b + 1], name=f"{dist}{b}")
            back = load(E.write_instance(inst, tmp_path / f"{dist}{b}.vrp"))
            assert back.variant == inst.variant == mtvrp.variant_names(td[b : b + 1])[0]
            assert back.max_duration == pytest.approx(inst.max_duration) if dist == "mdvrptw" else back.max_duration is None
            again = P.from_instance(back)
            assert ("duration_limit" in again.keys()) == (dist == "mdvrptw")


# ----------------------------------------------------------------------------- statistics
def _vrpb_rows(td) -> np.ndarray:
    """Per instance: backhaul fraction, mean customer demand / capacity, backhaul total over
    linehaul total."""
    lh = td["demand_linehaul"][:, 1:].double()
    bh = td["demand_backhaul"][:, 1:].double()
    return torch.stack([(bh > 0).double().mean(1), (lh + bh).mean(1), bh.sum(1) / lh.sum(1)], 1).numpy()


@pytest.fixture(scope="module")
def vrpb_files(shared_data) -> np.ndarray:
    files = sorted((shared_data / "vrpb").glob("*.vrp"))
    assert len(files) == 30
    return np.concatenate([_vrpb_rows(P.from_instance(load(f))) for f in files])


def test_vrpb_statistics_match_the_shared_files(vrpb_files):
    """Files (50%-linehaul Queiroga instances, n 523-1000): backhaul fraction 0.499-0.5, median
    mean demand/capacity 0.096, median backhaul/linehaul total 0.996."""
    n = 200
    gen = _vrpb_rows(MTVRPGenerator(n, distribution="vrpb")(240, seed=0))
    files = vrpb_files
    # backhaul fraction: the files are Queiroga's 50% class, exactly ceil(n/2) linehauls
    assert np.abs(files[:, 0] - 0.5).max() <= 1 / 523
    classes = 1.0 - np.array(VRPB_LINEHAUL_SHARES)  # 0.5, 0.34, 0.2
    nearest = np.abs(gen[:, 0, None] - classes[None]).argmin(1)
    assert np.abs(gen[:, 0] - classes[nearest]).max() <= 1 / n
    assert set(nearest.tolist()) == {0, 1, 2}
    half = nearest == 0
    assert abs(gen[half, 0].mean() - files[:, 0].mean()) <= 1 / n
    # demand / capacity (X's route-size law): medians within 25%
    assert np.median(gen[:, 1]) == pytest.approx(np.median(files[:, 1]), rel=0.25)
    # backhaul demands follow the linehauls' law: in the 50% class the totals agree (median
    # ratio within 0.1 of the files'), and the small-large rule puts large demands in linehauls
    assert np.median(gen[half, 2]) == pytest.approx(np.median(files[:, 2]), abs=0.1)
    assert files[:, 2].min() < 0.2 and gen[half, 2].min() < 0.2


def _md_rows(td) -> np.ndarray:
    """Per instance, network units: depots, horizon, median window width / horizon, mean window
    start / horizon, mean service / horizon, duration limit / horizon, duration limit, mean
    demand / capacity, mean distance of a customer to its nearest depot."""
    out = []
    for b in range(td.batch_size[0]):
        k = int(td["num_depots"][b])
        tw = td["time_windows"][b].double()
        h = float(tw[:k, 1].max())
        locs = td["locs"][b].double()
        near = torch.cdist(locs[k:], locs[:k]).min(1).values
        lim = float(td["duration_limit"][b])
        out.append(
            [
                k,
                h,
                float((tw[k:, 1] - tw[k:, 0]).median()) / h,
                float(tw[k:, 0].mean()) / h,
                float(td["service_time"][b, k:].double().mean()) / h,
                lim / h,
                lim,
                float(td["demand_linehaul"][b, k:].double().mean()),
                float(near.mean()),
            ]
        )
    return np.array(out)


@pytest.fixture(scope="module")
def mdvrptw_files(shared_data) -> np.ndarray:
    files = sorted((shared_data / "mdvrptw").glob("*.vrp"))
    assert len(files) == 14
    rows = [_md_rows(P.from_instance(load(f, edge_weight="EUC_2D", scale=1000))) for f in files]
    return np.concatenate(rows)


def test_mdvrptw_statistics_match_the_shared_files(mdvrptw_files):
    """Files (PR11A-PR24A, n 360-960): depots 4/6/12, horizon 5.0, median width 0.135 H, mean
    start 0.267 H, service 0.013 H, duration limit 0.40-0.475 H (2.0-2.4), demand/capacity
    0.070, nearest-depot distance 0.288."""
    files = mdvrptw_files
    gen = np.concatenate(
        [_md_rows(MTVRPGenerator(150, distribution="mdvrptw")(8, seed=s)) for s in range(12)]
    )

    def mean(x: np.ndarray, j: int) -> float:
        return float(x[:, j].mean())

    assert mean(gen, 1) == pytest.approx(mean(files, 1), rel=0.02)  # horizon
    assert mean(gen, 2) == pytest.approx(mean(files, 2), abs=0.005)  # window width
    assert mean(gen, 3) == pytest.approx(mean(files, 3), rel=0.05)  # window start
    assert mean(gen, 4) == pytest.approx(mean(files, 4), rel=0.10)  # service time
    assert mean(gen, 5) == pytest.approx(mean(files, 5), abs=0.015)  # duration / horizon
    assert files[:, 5].min() - 1e-6 <= gen[:, 5].min() and gen[:, 5].max() <= files[:, 5].max() + 1e-6
    assert mean(gen, 6) == pytest.approx(mean(files, 6), rel=0.03)  # duration, network units
    assert mean(gen, 7) == pytest.approx(mean(files, 7), rel=0.08)  # demand / capacity
    assert mean(gen, 8) == pytest.approx(mean(files, 8), rel=0.10)  # nearest-depot distance


def test_mdvrptw_depot_counts_match_the_shared_files(mdvrptw_files):
    """Depots per instance: the files' counts with the files' frequencies (6:4:4) within 0.1."""
    counts, freq = np.unique(mdvrptw_files[:, 0].astype(int), return_counts=True)
    assert dict(zip(counts.tolist(), freq.tolist())) == dict(MDVRPTW_DEPOTS)
    gen = MTVRPGenerator(3, distribution="mdvrptw")
    drawn = np.array([int(gen(1, seed=s)["num_depots"][0]) for s in range(300)])
    for c, f in zip(counts, freq):
        assert (drawn == c).mean() == pytest.approx(f / freq.sum(), abs=0.1)
    assert set(drawn.tolist()) == set(counts.tolist())


def test_the_generated_fleet_follows_the_files(shared_data):
    """(capacity, duration limit) pairs: the generator draws exactly the files' pairs."""
    pairs = set()
    for f in sorted((shared_data / "mdvrptw").glob("*.vrp")):
        inst = load(f, edge_weight="EUC_2D", scale=1000)
        pairs.add((inst.capacity, inst.max_duration / 1000))
    assert pairs == {(float(q), float(d)) for q, d in mtvrp.MDVRPTW_FLEET}
    td = MTVRPGenerator(5, distribution="mdvrptw", num_depots=4)(64, seed=0)
    insts = [P.to_instance(td[b : b + 1]) for b in range(64)]
    horizon = [float(i.time_windows[0, 1]) for i in insts]
    got = {(i.capacity, round(i.max_duration / h * 1000)) for i, h in zip(insts, horizon)}
    assert got <= {(float(q), d) for q, d in mtvrp.MDVRPTW_FLEET} and len(got) > 5
