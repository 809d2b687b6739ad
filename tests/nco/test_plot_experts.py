"""Expert load per variant of an MoE policy: counts agree with the router, shares sum to one,
the command writes the plot and CSV, and bad input is refused clearly."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import nco.envs as E
from nco.cli import main as cli_main
from nco.envs import mtvrp
from nco.plotting.experts import expert_load, plot_expert_load
from nco.policies import build_policy
from nco.policies.presets import get_preset
from tests.conftest import train_tiny_mtvrp

TINY = {"d_model": 16, "num_layers": 2, "num_heads": 2, "d_ff": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(n: int = 6, per: int = 3):
    full = mtvrp.MTVRPGenerator(n, variants=("OVRPBLTW",))(per, seed=0)
    names = ("CVRP", "VRPTW", "OVRPB")
    td = torch.cat([mtvrp.to_variant(full, v) for v in names])
    return td, mtvrp.variant_names(td)


def test_expert_load_counts_every_routed_token():
    torch.manual_seed(0)
    P = E.get_problem("mtvrp")
    policy = build_policy(get_preset("pomo-moe", **TINY), P).eval()
    td, groups = _batch()
    env = E.make("mtvrp", num_loc=6)
    load = expert_load(policy, td, env, groups)
    assert load.layers == ["encoder.0", "encoder.1", "decoder"]
    assert load.variants == ["CVRP", "VRPTW", "OVRPB"] and load.instances.tolist() == [3, 3, 3]
    share = load.share
    assert np.allclose(share.sum(-1), 1.0)
    # encoder, top-2 of 4 experts, no capacity: every node routes to exactly 2 experts
    nodes = 7 * 3
    assert np.allclose(load.counts[:2, :, :4].sum(-1), 2 * nodes)
    assert load.counts[:2, :, 4].sum() == 0  # no dense branch in the top-k encoder layers
    # the decoder's hierarchical router sends every row to the experts (k=2) or to dense
    dec = load.counts[2]
    assert np.all(dec.sum(-1) > 0)
    # the hooks are gone afterwards: a second pass counts the same
    again = expert_load(policy, td, env, groups)
    assert np.array_equal(again.counts, load.counts)
    fig = plot_expert_load(load)
    assert len([a for a in fig.axes if a.get_visible()]) >= 3


def test_expert_load_refuses_a_dense_policy():
    P = E.get_problem("mtvrp")
    policy = build_policy(get_preset("pomo", **TINY), P).eval()
    td, groups = _batch()
    with pytest.raises(ValueError, match="no mixture-of-experts"):
        expert_load(policy, td, E.make("mtvrp", num_loc=6), groups)
    moe = build_policy(get_preset("pomo-moe", **TINY), P).eval()
    with pytest.raises(ValueError, match="labels"):
        expert_load(moe, td, E.make("mtvrp", num_loc=6), groups[:2])


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory) -> Path:
    return train_tiny_mtvrp(tmp_path_factory.mktemp("moe") / "mtvrp8", "pomo-moe", size=8)


def test_plot_experts_command_writes_plot_and_csv(moe_run, tmp_path, capsys):
    out, table = tmp_path / "experts.png", tmp_path / "load.csv"
    rc = cli_main(
        [
            "plot-experts",
            str(moe_run),
            "--variants",
            "trained",
            "--num",
            "4",
            "--out",
            str(out),
            "--csv",
            str(table),
        ]
    )
    assert rc == 0 and out.stat().st_size > 1000
    rows = list(csv.DictReader(table.open()))
    assert {r["variant"] for r in rows} == {"CVRP", "VRPTW"}
    assert {r["layer"] for r in rows} == {"encoder.0", "encoder.1", "decoder"}
    for r in rows:
        shares = [float(r[f"expert_{j}"]) for j in range(4)] + [float(r["dense"])]
        assert sum(shares) == pytest.approx(1.0, abs=1e-5) and int(r["instances"]) == 4
    assert "encoder.0:" in capsys.readouterr().out


def test_plot_experts_command_errors(moe_run, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert cli_main(["plot-experts", str(moe_run), "--variants", "VRPX", "--out", str(out)]) == 2
    assert "VRPX" in capsys.readouterr().err and not out.exists()
    assert cli_main(["plot-experts", str(moe_run), "--num", "0", "--out", str(out)]) == 2
    assert "--num" in capsys.readouterr().err
    assert cli_main(["plot-experts", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert not out.exists()
