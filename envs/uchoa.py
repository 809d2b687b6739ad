"""X-like CVRP instances: the generator of Uchoa et al. (2017).

Uchoa, Pecin, Pessoa, Poggi, Vidal, Subramanian (2017), "New benchmark instances for the
Capacitated Vehicle Routing Problem", EJOR 257(3), 845-858 (the X set of CVRPLIB). The rules
below follow the paper's description and the public generator script of the CVRPLIB site
(``generate.py`` of Queiroga et al. 2022, "10,000 optimal CVRP solutions for testing machine
learning based heuristics", which re-implements the X scheme); where the two differ, the
choice was checked against the X files themselves (see "Deviations").

Every instance lives on the integer grid [0, 1000]^2 and is drawn independently:

* **Depot** (``depot``): ``central`` (500, 500), ``eccentric`` (0, 0) or ``random`` (a uniform
  grid point).
* **Customers** (``customers``), all on distinct grid points that differ from the depot's:
  ``random``: uniform grid points. ``clustered``: S ~ U{3..8} seeds are uniform grid points (they
  are customers too); every other customer is drawn by acceptance-rejection: a uniform grid
  point p is accepted with probability ``min(1, sum_s 2^(-d(p, s) / 40) / w_max)``, ``w_max``
  being the largest such sum over the seeds themselves (so a point next to the densest seed is
  always accepted). ``random-clustered``: ``n // 2`` random customers, the other ``n - n // 2``
  clustered (seeds among them).
* **Demands** (``demand``), integers: ``unitary`` (all 1), ``1-10``, ``5-10``, ``1-100``,
  ``50-100`` (uniform integers in the range); ``quadrant``: U{51..100} for a customer in an odd
  quadrant of the grid (x, y both below 500 or both at least 500; quadrants are taken about the
  grid centre (500, 500), not the depot) and U{1..50} otherwise; ``small-large``: a random subset
  of ``ceil(1.5 n / r) - 2`` customers (about 1.5 per route; clipped to [0, n]) gets U{50..100},
  the others U{1..10}.
* **Route size**: r ~ Triangular(3, 6, 25) (``route_size`` = (low, high), mode
  ``route_size_mode``), the average number of customers per route; the capacity is
  ``Q = max(max_i q_i, ceil(r * sum_i q_i / n))``, and ``floor(r)`` for unitary demands.

``mix`` (the default of each of ``depot``, ``customers`` and ``demand``) draws that attribute
uniformly per instance, so one generator covers the X family. The customers' order is a random
permutation (no attribute can be read from a customer's index).

Output: the keys, dtypes and scaling of :class:`~nco.envs.cvrp.CVRPGenerator` (``locs`` =
grid / 1000, ``demand`` = q / Q with 0 at the depot, ``capacity`` = Q per instance, float64).
``locs * 1000`` rounds back to the integer grid exactly.

Deviations and choices
----------------------
* Attraction kernel: ``2^(-d / 40)`` (the public script's) rather than the ``exp(-d / 40)`` of
  some descriptions of the scheme. The X files decide: a mixture fit of 2-D exponential clusters gives a kernel scale of 46 grid units
  on X-n317-k53 and 54 on X-n655-k131 (both fully clustered); the same fit on instances drawn
  here gives 48-59 with ``2^(-d/40)`` (scale 40 / ln 2 = 57.7) and 34-40 with ``exp(-d/40)``.
* ``small-large``: descriptions of the scheme give "70% to 95% small demands"; the X files carry
  exactly ``ceil(1.5 n / r) - 2`` large demands, the count of the public script (customers whose
  1-based file index, depot = 1, lies below 1.5 n / r), e.g. X-n115-k10: 12 of 114 (89% small),
  X-n524-k153: 205 of 523 (61% small); that count is used here.
* The ``quadrant`` orientation (odd quadrants large) and the grid-centre reference are those of
  the script and of X-n289-k60 / X-n336-k84.
* ``Q >= max_i q_i`` (from the script) keeps every instance feasible when r is small.
* The number of seeds is capped at the number of clustered customers (the script refuses such
  tiny instances).
* The route size law Triangular(3, 6, 25) is the one of public re-implementations of the X
  scheme for learning; the script instead draws r uniformly within one of six size classes
  (3-5, 5-8, 8-12, 12-16, 16-25, 25-50). The 31 X files of the benchmark pack imply r in
  [3.2, 23.6] (median 6.9); this law gives [3, 25] (median 10.5).
* Randomness comes from a numpy ``Generator``: seeded from ``seed`` directly (so a seed gives
  the same instances on every device) or from one draw of the torch generator ``rng``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tensordict import TensorDict

from nco.envs.common import numpy_rng

#: Side of the integer grid; coordinates are 0..GRID and ``locs`` = grid / GRID.
GRID = 1000
#: Distance over which a seed's attraction halves: it is ``2^(-d / DECAY)``.
DECAY = 40.0
#: Number of cluster seeds, uniform integer in this range (inclusive).
SEEDS = (3, 8)
#: Average large-demand customers per route of the ``small-large`` demands.
LARGE_PER_ROUTE = 1.5

DEPOTS = ("central", "eccentric", "random")
CUSTOMERS = ("random", "clustered", "random-clustered")
DEMANDS = ("unitary", "1-10", "5-10", "1-100", "50-100", "quadrant", "small-large")

_CELLS = (GRID + 1) ** 2
# Demand bounds per DEMANDS entry (quadrant: the even-quadrant range; small-large: the small one).
_DEMAND_LO = np.array([1, 1, 5, 1, 50, 1, 1], dtype=np.int64)
_DEMAND_HI = np.array([1, 10, 10, 100, 100, 50, 10], dtype=np.int64)
_QUADRANT = DEMANDS.index("quadrant")
_SMALL_LARGE = DEMANDS.index("small-large")
_UNITARY = DEMANDS.index("unitary")


@dataclass(frozen=True)
class UchoaGenerator:
    """Seeded X-like CVRP instances (Uchoa et al. 2017); see the module docstring.

    Parameters
    ----------
    num_loc : number of customers (the instance has ``num_loc + 1`` nodes).
    depot : ``central``, ``eccentric``, ``random`` or ``mix`` (drawn per instance).
    customers : ``random``, ``clustered``, ``random-clustered`` or ``mix``.
    demand : ``unitary``, ``1-10``, ``5-10``, ``1-100``, ``50-100``, ``quadrant``,
        ``small-large`` or ``mix``.
    route_size : (low, high) of the average route size r, low >= 1.
    route_size_mode : mode of r's triangular law, within ``route_size``.
    """

    num_loc: int = 100
    depot: str = "mix"
    customers: str = "mix"
    demand: str = "mix"
    route_size: tuple[float, float] = (3.0, 25.0)
    route_size_mode: float = 6.0

    def __post_init__(self) -> None:
        if self.num_loc < 1:
            raise ValueError(f"num_loc must be >= 1, got {self.num_loc}")
        for name, allowed in (("depot", DEPOTS), ("customers", CUSTOMERS), ("demand", DEMANDS)):
            if getattr(self, name) not in (*allowed, "mix"):
                raise ValueError(
                    f"{name} must be one of {(*allowed, 'mix')}, got {getattr(self, name)!r}"
                )
        object.__setattr__(self, "route_size", tuple(float(x) for x in self.route_size))
        if len(self.route_size) != 2:
            raise ValueError(f"route_size must be (low, high), got {self.route_size}")
        lo, hi = self.route_size
        if not 1.0 <= lo <= self.route_size_mode <= hi:
            raise ValueError(
                f"need 1 <= route_size low <= route_size_mode <= high, got {self.route_size} "
                f"and mode {self.route_size_mode}"
            )

    def __call__(
        self,
        batch_size: int | Sequence[int],
        *,
        seed: int | None = None,
        rng: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> TensorDict:
        """Generate a batch -> TensorDict [B] with ``locs`` [B, N, 2], ``demand`` [B, N] (fraction
        of capacity, 0 at the depot) and ``capacity`` [B] (float64, original units)."""
        (b,) = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
        grid, dem, cap = self.sample_grid(b, rng=numpy_rng(seed, rng))
        locs = torch.from_numpy(grid.astype(np.float32) / np.float32(GRID))
        demand = np.concatenate([np.zeros((b, 1)), dem / cap[:, None]], 1).astype(np.float32)
        return TensorDict(
            {
                "locs": locs.to(device),
                "demand": torch.from_numpy(demand).to(device),
                "capacity": torch.from_numpy(cap.astype(np.float64)).to(device),
            },
            batch_size=[b],
            device=device,
        )

    def sample_grid(
        self, batch: int, *, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Instances in the paper's units -> (grid coordinates [B, N, 2] int64, depot row first;
        customer demands [B, n] int64; capacities [B] int64)."""
        n = self.num_loc
        depot_kind = _kinds(rng, self.depot, DEPOTS, batch)
        cust_kind = _kinds(rng, self.customers, CUSTOMERS, batch)
        dem_kind = _kinds(rng, self.demand, DEMANDS, batch)
        lo, hi = self.route_size
        r = (
            rng.triangular(lo, self.route_size_mode, hi, size=batch)
            if hi > lo
            else np.full(batch, lo)
        )
        num_seeds = rng.integers(SEEDS[0], SEEDS[1], endpoint=True, size=batch)

        depot = rng.integers(0, GRID, endpoint=True, size=(batch, 2))
        depot[depot_kind == DEPOTS.index("central")] = GRID // 2
        depot[depot_kind == DEPOTS.index("eccentric")] = 0
        grid = np.empty((batch, n + 1, 2), dtype=np.int64)
        grid[:, 0] = depot
        for i in range(batch):
            kind = CUSTOMERS[cust_kind[i]]
            n_rand = n if kind == "random" else n // 2 if kind == "random-clustered" else 0
            codes = _customer_cells(rng, n_rand, n - n_rand, int(num_seeds[i]), depot[i])
            grid[i, 1:] = _decode(rng.permutation(codes))

        demand = _demands(rng, grid[:, 1:], dem_kind, r)
        total = demand.sum(1)
        cap = np.ceil(r * total / n).astype(np.int64)
        cap = np.where(dem_kind == _UNITARY, np.floor(r).astype(np.int64), cap)
        return grid, demand, np.maximum(cap, demand.max(1))


# ----------------------------------------------------------------------------- pieces
def _kinds(rng: np.random.Generator, value: str, allowed: tuple[str, ...], b: int) -> np.ndarray:
    """Index into ``allowed`` per instance [B]: fixed, or uniform for ``mix``."""
    if value == "mix":
        return rng.integers(0, len(allowed), size=b)
    return np.full(b, allowed.index(value), dtype=np.int64)


def _decode(codes: np.ndarray) -> np.ndarray:
    """Grid cell codes ``x * (GRID + 1) + y`` -> [.., 2] integer coordinates."""
    return np.stack([codes // (GRID + 1), codes % (GRID + 1)], -1)


def _fresh(cand: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Candidates not in ``taken`` and not repeated, in draw order (first occurrence kept), as
    a sequential redraw-until-free loop would give them."""
    cand = cand[~np.isin(cand, taken)]
    _, first = np.unique(cand, return_index=True)
    return cand[np.sort(first)]


def _customer_cells(
    rng: np.random.Generator, n_rand: int, n_clust: int, num_seeds: int, depot: np.ndarray
) -> np.ndarray:
    """Distinct cell codes [n_rand + n_clust] of one instance, none on the depot."""
    taken = np.array([depot[0] * (GRID + 1) + depot[1]], dtype=np.int64)
    while taken.size < 1 + n_rand:
        need = 1 + n_rand - taken.size
        cand = _fresh(rng.integers(0, _CELLS, size=need + need // 8 + 8), taken)
        taken = np.concatenate([taken, cand[:need]])
    if n_clust == 0:
        return taken[1:]
    s = min(num_seeds, n_clust)
    while taken.size < 1 + n_rand + s:
        need = 1 + n_rand + s - taken.size
        taken = np.concatenate(
            [taken, _fresh(rng.integers(0, _CELLS, size=need + 8), taken)[:need]]
        )
    seeds = _decode(taken[-s:]).astype(np.float32)

    def attraction(pts: np.ndarray) -> np.ndarray:
        # float32 and split axes: this is the generator's hot loop (about 20 candidates per
        # accepted customer), and acceptance probabilities need no more precision.
        pts = pts.astype(np.float32)
        d = np.hypot(pts[:, 0, None] - seeds[:, 0], pts[:, 1, None] - seeds[:, 1])
        d *= np.float32(-1.0 / DECAY)
        return np.exp2(d, out=d).sum(-1)

    # Normalising by the densest seed makes that seed's neighbourhood accept with certainty.
    w_max = float(attraction(seeds).max())
    target = 1 + n_rand + n_clust
    # Acceptance is at most 2 pi (DECAY / ln 2)^2 / GRID^2 (2%) per seed; measured after one draw.
    rate = 0.01 * s
    while taken.size < target:
        need = target - taken.size
        m = min(int(1.3 * need / rate) + 64, 1 << 20)
        cand = rng.integers(0, _CELLS, size=m)
        u = rng.random(m)
        acc = cand[u * w_max <= attraction(_decode(cand))]
        rate = max(acc.size / m, 1e-4)
        taken = np.concatenate([taken, _fresh(acc, taken)[:need]])
    return taken[1:]


def _demands(
    rng: np.random.Generator, cust: np.ndarray, kind: np.ndarray, r: np.ndarray
) -> np.ndarray:
    """Integer demands [B, n] for customer grid coordinates [B, n, 2], demand kinds [B] and
    route sizes [B]. Every draw is made for every instance, so a kind uses a fixed stream."""
    b, n, _ = cust.shape
    lo, hi = _DEMAND_LO[kind][:, None], _DEMAND_HI[kind][:, None]
    dem = lo + (rng.random((b, n)) * (hi - lo + 1)).astype(np.int64)
    half = GRID / 2
    odd = (cust[..., 0] < half) == (cust[..., 1] < half)
    dem = np.where((kind == _QUADRANT)[:, None] & odd, dem + 50, dem)
    large_dem = 50 + (rng.random((b, n)) * 51).astype(np.int64)
    n_large = np.clip(np.ceil(LARGE_PER_ROUTE * n / r).astype(np.int64) - 2, 0, n)
    rank = rng.random((b, n)).argsort(1).argsort(1)
    large = (kind == _SMALL_LARGE)[:, None] & (rank < n_large[:, None])
    return np.where(large, large_dem, dem)


def implied_route_size(demand: np.ndarray | torch.Tensor, capacity: float) -> float:
    """Implied average route size ``n * Q / sum(q)`` of one instance's customer demands [n]
    (original units), the r that the generator's capacity rule inverts (up to rounding)."""
    q = np.asarray(demand, dtype=np.float64)
    return float(q.size * capacity / q.sum())


__all__ = ["CUSTOMERS", "DEMANDS", "DEPOTS", "UchoaGenerator", "implied_route_size"]
