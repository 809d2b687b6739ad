"""Solomon-like CVRPTW instances: the six classes of Solomon (1987), any size.

Solomon's 56 instances (and Gehring & Homberger's extension to 200-1000 customers) come in
three customer layouts (R: uniform, C: clustered, RC: half of each) and two horizons (type 1:
short, a few customers per route; type 2: long, many), with one service time per class and a
fraction of the customers (25, 50, 75 or 100%) given a window of a per-instance width. The
network sees an instance scaled into the unit square with times divided by the same factor
(:meth:`~nco.envs.Instance.to_tensordict`), so the laws below are stated in those units; the
constants are the shared Solomon files measured that way (``tests/envs/test_solomon.py``
compares the generated statistics with them):

========  ========  =======  ========  ======================================
class     horizon   service  capacity  demands
========  ========  =======  ========  ======================================
R1        3.11      0.135    200       U{1..30}
R2        13.5      0.135    1000      U{1..30}
C1        13.0      0.947    200       10 x U{1..3}
C2        35.7      0.947    700       10 x U{1..3}
RC1       2.53      0.105    200       U{1..30}
RC2       10.1      0.105    1000      U{1..30}
========  ========  =======  ========  ======================================

* **Depot**: uniform in [0.35, 0.55]^2 (the files: (0.42-0.45, 0.43-0.49)).
* **Customers**: R uniform in the unit square; C around S ~ U{5..10} centres uniform in
  [0.1, 0.9]^2, Gaussian with a per-instance spread U[0.02, 0.06], clipped to the square; RC
  half of each.
* **Windows**: a fraction f ~ U{0.25, 0.5, 0.75, 1} of the customers gets a window of width
  ``w_i = b H (1 + v u_i)``, b log-uniform in [0.04, 0.5] (the files' median widths run from
  0.04 to 0.5 of the horizon), v ~ U[0, 0.5], u_i ~ U[-1, 1], centred at a uniform time
  between the earliest arrival ``d_i`` (depot distance) and the latest start that still allows
  the return ``H - d_i - s``, cut to those two; the others get ``[0, H - d_i - s]``. The depot's
  window is [0, H]. Every customer can thus be served by a vehicle of its own.
* Horizons are jittered by U[0.9, 1.1] per instance; the class is drawn per instance
  (``classes`` restricts it).

Output keys as :class:`~nco.envs.cvrptw.CVRPTWGenerator`: ``locs``, ``demand`` (fraction of
capacity), ``capacity`` (per instance, float64), ``time_windows``, ``service_time``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tensordict import TensorDict

from nco.envs.common import numpy_rng

#: class -> (horizon, service time, capacity, clustered share, demand step) in unit-square units
CLASSES: dict[str, tuple[float, float, float, float, int]] = {
    "R1": (3.11, 0.135, 200.0, 0.0, 1),
    "R2": (13.5, 0.135, 1000.0, 0.0, 1),
    "C1": (13.0, 0.947, 200.0, 1.0, 10),
    "C2": (35.7, 0.947, 700.0, 1.0, 10),
    "RC1": (2.53, 0.105, 200.0, 0.5, 1),
    "RC2": (10.1, 0.105, 1000.0, 0.5, 1),
}
WINDOW_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
WIDTH_RANGE = (0.04, 0.5)


@dataclass(frozen=True)
class SolomonGenerator:
    """Seeded Solomon-like CVRPTW instances; see the module docstring.

    Parameters
    ----------
    num_loc : customers per instance.
    classes : the Solomon classes to draw from (uniformly per instance).
    """

    num_loc: int = 100
    classes: tuple[str, ...] = tuple(CLASSES)

    def __post_init__(self) -> None:
        if self.num_loc < 1:
            raise ValueError(f"num_loc must be >= 1, got {self.num_loc}")
        bad = [c for c in self.classes if c not in CLASSES]
        if bad or not self.classes:
            raise ValueError(f"classes must be a non-empty subset of {tuple(CLASSES)}, got {self.classes}")

    def __call__(
        self,
        batch_size: int | Sequence[int],
        *,
        seed: int | None = None,
        rng: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> TensorDict:
        """Generate a batch -> TensorDict [B] with the CVRPTW keys."""
        (b,) = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
        arrays = self.sample(b, rng=numpy_rng(seed, rng))
        return TensorDict(
            {
                k: torch.from_numpy(v).to(device)
                for k, v in zip(("locs", "demand", "capacity", "time_windows", "service_time"), arrays, strict=True)
            },
            batch_size=[b],
            device=device,
        )

    def sample(
        self, batch: int, *, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """numpy arrays (locs [B, N, 2] f32, demand [B, N] f32, capacity [B] f64, time windows
        [B, N, 2] f32, service [B, N] f32), depot row first."""
        n = self.num_loc
        kind = rng.choice(np.array(self.classes), size=batch)
        horizon, service, capacity, clustered, step = (
            np.array([CLASSES[k][j] for k in kind]) for j in range(5)
        )
        horizon = horizon * rng.uniform(0.9, 1.1, batch)
        locs = np.empty((batch, n + 1, 2))
        locs[:, 0] = rng.uniform(0.35, 0.55, (batch, 2))
        locs[:, 1:] = rng.uniform(0.0, 1.0, (batch, n, 2))
        for i in range(batch):
            m = int(round(clustered[i] * n))
            if m:
                centres = rng.uniform(0.1, 0.9, (int(rng.integers(5, 11)), 2))
                pick = centres[rng.integers(0, len(centres), m)]
                pts = pick + rng.normal(0.0, rng.uniform(0.02, 0.06), (m, 2))
                locs[i, 1 : m + 1] = np.clip(pts, 0.0, 1.0)
            locs[i, 1:] = locs[i, 1:][rng.permutation(n)]
        dem = np.where(
            step[:, None] > 1,
            10.0 * rng.integers(1, 4, (batch, n)),
            rng.integers(1, 31, (batch, n)).astype(np.float64),
        )
        demand = np.concatenate([np.zeros((batch, 1)), dem / capacity[:, None]], 1)

        d0 = np.linalg.norm(locs[:, 1:] - locs[:, :1], axis=-1)
        latest = horizon[:, None] - d0 - service[:, None]
        lo, hi = (float(np.log(w)) for w in WIDTH_RANGE)
        base = np.exp(rng.uniform(lo, hi, batch)) * horizon
        spread = rng.uniform(0.0, 0.5, batch)
        width = base[:, None] * (1.0 + spread[:, None] * rng.uniform(-1.0, 1.0, (batch, n)))
        centre = d0 + (latest - d0) * rng.uniform(0.0, 1.0, (batch, n))
        start = np.maximum(centre - width / 2, 0.0)
        end = np.minimum(centre + width / 2, latest)
        frac = rng.choice(np.array(WINDOW_FRACTIONS), size=batch)
        free = rng.uniform(0.0, 1.0, (batch, n)) >= frac[:, None]
        start = np.where(free, 0.0, start)
        end = np.where(free, latest, end)
        tw = np.zeros((batch, n + 1, 2))
        tw[:, 0, 1] = horizon
        tw[:, 1:, 0], tw[:, 1:, 1] = start, end
        svc = np.concatenate([np.zeros((batch, 1)), np.repeat(service[:, None], n, 1)], 1)
        return (
            locs.astype(np.float32),
            demand.astype(np.float32),
            capacity.astype(np.float64),
            tw.astype(np.float32),
            svc.astype(np.float32),
        )
