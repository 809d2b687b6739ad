"""Route plots: what is drawn on CVRP, TSP, CVRPTW, matrix-only and variant instances (open
routes, backhauls, several depots); files; CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import rgb_to_hsv, to_rgba
from matplotlib.figure import Figure

import nco.envs as E
from nco.cli import main
from nco.envs import mtvrp
from nco.envs.mtvrp import MTVRPGenerator
from nco.plotting import plot_solution, plot_solutions_side_by_side, save_route_plot


def _axes() -> object:
    return Figure(figsize=(4, 4)).add_subplot(1, 1, 1)


def _by_gid(artists: list, gid: str) -> list:
    return [a for a in artists if a.get_gid() == gid]


def _solution(
    instances_dir: Path, inst_file: str, sol_file: str, solver: str = "bks"
) -> E.Solution:
    inst = E.load(instances_dir / inst_file)
    return E.Solution.from_routes(
        inst, E.read_solution(instances_dir / sol_file, inst), solver=solver
    )


def _png_ok(path: Path) -> bool:
    return (
        path.is_file()
        and path.stat().st_size > 5_000
        and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    )


def test_cvrp_one_line_per_route_depot_and_title(instances_dir: Path) -> None:
    sol = _solution(instances_dir, "X-n101-k25.vrp", "X-n101-k25.sol")
    ax = plot_solution(sol, _axes())
    assert len(_by_gid(ax.lines, "route")) == len(sol.routes) == 26
    (depot,) = _by_gid(ax.lines, "depot")
    assert depot.get_marker() == "s" and tuple(depot.get_xydata()[0]) == tuple(
        sol.instance.coords[0]
    )
    (customers,) = _by_gid(ax.collections, "customers")
    assert len(customers.get_offsets()) == 100
    sizes = customers.get_sizes()
    assert sizes.min() < sizes.max()  # sized by demand
    assert len(_by_gid(ax.collections, "arrows")) == len(sol.routes)
    assert not _by_gid(ax.texts, "label")  # 101 nodes: no labels by default
    title = ax.get_title()
    assert (
        "X-n101-k25" in title and "27591" in title and "feasible" in title and "26 routes" in title
    )


def test_route_line_goes_depot_to_depot(instances_dir: Path) -> None:
    sol = _solution(instances_dir, "X-n101-k25.vrp", "X-n101-k25.sol")
    ax = plot_solution(sol, _axes(), arrows=False)
    line = _by_gid(ax.lines, "route")[0]
    xy = line.get_xydata()
    coords = sol.instance.coords
    assert len(xy) == len(sol.routes[0]) + 2
    assert (xy[0] == coords[0]).all() and (xy[-1] == coords[0]).all()
    assert (xy[1] == coords[sol.routes[0][0]]).all()
    assert not _by_gid(ax.collections, "arrows")


def test_tsp_closed_tour_constant_markers_no_depot(instances_dir: Path) -> None:
    inst = E.load(instances_dir / "eil51.tsp")
    sol = E.Solution.from_routes(inst, [list(range(inst.num_nodes))], solver="identity")
    assert sol.feasible
    ax = plot_solution(sol, _axes())
    (tour,) = _by_gid(ax.lines, "route")
    assert len(tour.get_xydata()) == 52 and (tour.get_xydata()[0] == tour.get_xydata()[-1]).all()
    assert not _by_gid(ax.lines, "depot")
    (cities,) = _by_gid(ax.collections, "customers")
    assert len(cities.get_offsets()) == 51 and len(set(cities.get_sizes())) == 1
    assert "51 cities" in ax.get_title()


def test_cvrptw_labels_show_time_windows(instances_dir: Path) -> None:
    sol = _solution(instances_dir, "C101.txt", "C101.sol")
    assert sol.feasible
    ax = plot_solution(sol, _axes(), annotate=True)
    assert len(_by_gid(ax.lines, "route")) == len(sol.routes)
    labels = [t.get_text() for t in _by_gid(ax.texts, "label")]
    assert len(labels) == sol.instance.num_nodes
    a, b = sol.instance.time_windows[1]
    assert labels[1] == f"1\n[{a:g},{b:g}]"


def test_small_matrix_only_instance_labels_and_mds_note(
    instances_dir: Path, tmp_path: Path
) -> None:
    sol = _solution(instances_dir, "E-n13-k4.vrp", "E-n13-k4.sol")
    assert sol.instance.coords is None
    ax = sol.plot(_axes())  # the Solution method delegates to plot_solution
    labels = sorted(int(t.get_text()) for t in _by_gid(ax.texts, "label"))
    assert labels == list(range(13))
    assert "MDS" in ax.get_title() and len(_by_gid(ax.lines, "route")) == len(sol.routes)
    assert not plot_solution(sol, _axes(), annotate=False).texts
    png = save_route_plot(sol, tmp_path / "sub" / "e13.png")
    assert _png_ok(png)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["e13.png"]


def test_infeasible_solution_is_drawn_with_unvisited_customers(instances_dir: Path) -> None:
    sol = _solution(instances_dir, "E-n22-k4.vrp", "E-n22-k4.sol")
    partial = E.Solution.from_routes(sol.instance, sol.routes[1:], solver="partial")
    ax = plot_solution(partial, _axes())
    assert "INFEASIBLE" in ax.get_title()
    (missing,) = _by_gid(ax.collections, "unvisited")
    assert len(missing.get_offsets()) == len(sol.routes[0])


def test_out_of_range_node_raises(instances_dir: Path) -> None:
    inst = E.load(instances_dir / "E-n13-k4.vrp")
    bad = E.Solution.from_routes(inst, [[1, 2, 99]])
    with pytest.raises(ValueError, match="node 99 is out of range"):
        plot_solution(bad, _axes())


def _variant(variant: str, n: int = 12, seed: int = 0) -> E.Instance:
    return mtvrp.to_instance(MTVRPGenerator(n, variants=(variant,))(1, seed=seed), name=variant)


def _pairs_plan(inst: E.Instance) -> E.Solution:
    """Routes of two consecutive customers, each from the depot nearest its first customer."""
    nd = inst.num_depots
    customers = list(range(nd, inst.num_nodes))
    routes = [customers[i : i + 2] for i in range(0, len(customers), 2)]
    depots = [int(np.argmin(inst.distance[:nd, r[0]])) for r in routes]
    return E.Solution.from_routes(inst, routes, depots=depots if nd > 1 else None, solver="pairs")


def test_open_routes_drawn_without_the_return_leg() -> None:
    sol = _pairs_plan(_variant("OVRP"))
    ax = plot_solution(sol, _axes(), arrows=False)
    lines = _by_gid(ax.lines, "route")
    assert len(lines) == len(sol.routes)
    coords = sol.instance.coords
    for line, route in zip(lines, sol.routes, strict=True):
        xy = line.get_xydata()
        assert len(xy) == len(route) + 1  # depot, customers: no way back
        assert (xy[0] == coords[0]).all() and (xy[-1] == coords[route[-1]]).all()
    assert "OVRP" in ax.get_title()
    assert any("open route" in t.get_text() for t in ax.get_legend().get_texts())


def test_backhaul_customers_hollow_and_in_the_legend() -> None:
    inst = _variant("VRPB", n=20, seed=1)
    sol = _pairs_plan(inst)
    ax = plot_solution(sol, _axes())
    (lines,) = _by_gid(ax.collections, "customers")
    (backs,) = _by_gid(ax.collections, "backhauls")
    pickups = int((inst.backhaul > 0).sum())
    assert 0 < pickups < inst.num_customers
    assert len(backs.get_offsets()) == pickups
    assert len(lines.get_offsets()) == inst.num_customers - pickups
    # hollow: no face colour, edges in the route's colour; linehauls are filled
    assert len(backs.get_facecolors()) == 0 or (backs.get_facecolors()[:, 3] == 0).all()
    assert (lines.get_facecolors()[:, 3] > 0).all()
    route_colors = {to_rgba(line.get_color()) for line in _by_gid(ax.lines, "route")}
    assert {tuple(c) for c in backs.get_edgecolors()} <= route_colors
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "backhaul (pickup)" in legend and "linehaul (delivery)" in legend
    # a plain CVRP plot has no legend and no hollow markers
    plain = _solution_cvrp_like()
    ax = plot_solution(plain, _axes())
    assert ax.get_legend() is None and not _by_gid(ax.collections, "backhauls")


def _solution_cvrp_like() -> E.Solution:
    inst = E.get_problem("cvrp").to_instance(E.get_problem("cvrp").generator(num_loc=8)(1, seed=0))
    return E.Solution.from_routes(inst, [[v] for v in range(1, inst.num_nodes)])


def test_each_depot_marked_with_its_routes_in_its_colour() -> None:
    inst = _variant("MDVRP", n=15, seed=2)
    sol = _pairs_plan(inst)
    assert sol.route_depots is not None and len(set(sol.route_depots)) > 1
    ax = plot_solution(sol, _axes(), arrows=False)
    depots = _by_gid(ax.lines, "depot")
    assert len(depots) == inst.num_depots == 3
    for d, marker in enumerate(depots):
        assert marker.get_marker() == "s"
        assert tuple(marker.get_xydata()[0]) == tuple(inst.coords[d])
    depot_colors = [to_rgba(m.get_color()) for m in depots]
    assert len(set(depot_colors)) == 3
    lines = _by_gid(ax.lines, "route")
    for line, route, d in zip(lines, sol.routes, sol.route_depots, strict=True):
        xy = line.get_xydata()
        # starts and ends at its own depot
        assert (xy[0] == inst.coords[d]).all() and (xy[-1] == inst.coords[d]).all()
        assert (xy[1] == inst.coords[route[0]]).all()

    # routes of one depot share its hue: each route's hue is nearest its own depot's hue
    def hue(color: object) -> float:
        return float(rgb_to_hsv(np.array(to_rgba(color))[:3])[0])

    for line, d in zip(lines, sol.route_depots, strict=True):
        gaps = [abs(hue(line.get_color()) - hue(dc)) for dc in depot_colors]
        assert int(np.argmin([min(g, 1 - g) for g in gaps])) == d
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["depot 1", "depot 2", "depot 3"]


def test_side_by_side_two_axes_and_file(instances_dir: Path, tmp_path: Path) -> None:
    bks = _solution(instances_dir, "X-n101-k25.vrp", "X-n101-k25.sol")
    # A second load of the same file is the same instance for this purpose.
    inst = E.load(instances_dir / "X-n101-k25.vrp")
    other = E.Solution.from_routes(inst, [[c] for c in range(1, 101)], solver="one-per-customer")
    out = tmp_path / "cmp.png"
    fig = plot_solutions_side_by_side([other, bks], titles=["naive", "bks"], out=out)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["naive", "bks"]
    assert len(_by_gid(fig.axes[0].lines, "route")) == 100
    assert _png_ok(out)
    assert _png_ok(save_route_plot([other, bks], tmp_path / "cmp2.png"))


def test_side_by_side_rejects_different_instances(instances_dir: Path, tmp_path: Path) -> None:
    a = _solution(instances_dir, "E-n13-k4.vrp", "E-n13-k4.sol", solver="s1")
    b = _solution(instances_dir, "E-n22-k4.vrp", "E-n22-k4.sol", solver="s2")
    with pytest.raises(ValueError, match="'E-n13-k4' and 'E-n22-k4'"):
        plot_solutions_side_by_side([a, b], out=tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="2 titles for 1"):
        plot_solutions_side_by_side([a], titles=["x", "y"])


def test_cli_plot_writes_png(instances_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.png"
    inst, sol = str(instances_dir / "E-n22-k4.vrp"), str(instances_dir / "E-n22-k4.sol")
    assert main(["plot", inst, sol, "--out", str(out)]) == 0
    assert _png_ok(out)
    assert f"wrote {out}" in capsys.readouterr().out
    both = tmp_path / "both.png"
    assert main(["plot", inst, sol, sol, "--out", str(both), "--title", "a", "--title", "b"]) == 0
    assert _png_ok(both)


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (lambda d, t: t / "missing.sol", "no such solution file"),
        (
            lambda d, t: _write(t / "far.sol", "Route #1: 1 2 500\nCost 1\n"),
            "node 500 is out of range",
        ),
        (lambda d, t: d / "eil51.opt.tour", "TOUR_SECTION"),
        (lambda d, t: _write(t / "junk.sol", "hello\n"), "junk.sol"),
    ],
    ids=["missing", "out-of-range", "tour-for-vrp", "junk"],
)
def test_cli_plot_bad_solution_exits_2_without_png(
    instances_dir: Path, tmp_path: Path, capsys, make_bad, message: str
) -> None:
    bad = make_bad(instances_dir, tmp_path)
    out = tmp_path / "out" / "x.png"
    code = main(["plot", str(instances_dir / "E-n22-k4.vrp"), str(bad), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nco plot: error:")
    assert message in err[0] and bad.name in err[0]
    assert not out.exists() and not (out.parent.exists() and list(out.parent.iterdir()))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_solve_with_plot_writes_solution_and_png(
    instances_dir: Path, tmp_path: Path, capsys
) -> None:
    sol, png = tmp_path / "e13.sol", tmp_path / "e13.png"
    args = ["solve", str(instances_dir / "E-n13-k4.vrp"), "--solver", "ortools"]
    assert main([*args, "--time-limit", "1", "--out", str(sol), "--plot", str(png)]) == 0
    assert sol.is_file() and _png_ok(png)
    assert f"plot -> {png}" in capsys.readouterr().out


def test_solve_plot_with_several_instances_is_refused(
    instances_dir: Path, tmp_path: Path, capsys
) -> None:
    inst = str(instances_dir / "E-n13-k4.vrp")
    code = main(
        [
            "solve",
            inst,
            inst,
            "--solver",
            "ortools",
            "--out",
            str(tmp_path),
            "--plot",
            str(tmp_path / "p.png"),
        ]
    )
    assert code == 2
    assert "--plot: give one instance" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
