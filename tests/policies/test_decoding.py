"""Tests for nco.policies.decoding: multistart, augmentation, beam search, evaluate, caching."""

from __future__ import annotations

import time

import pytest
import torch

from nco.envs import get_problem
from nco.policies import (
    AttentionPolicy,
    augment_instances,
    build_policy,
    dihedral_locs,
)
from nco.policies.decoding import (
    DEFAULT_WORK_BUDGET,
    DecodeConfig,
    DecodeTimeout,
    _encode,
    plan_decode,
    restrict_to_candidates,
)

TINY = {"d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 64}
PROBLEMS = ("tsp", "cvrp", "cvrptw")


def tiny(preset: str, problem: str, **kw) -> AttentionPolicy:
    torch.manual_seed(0)
    return build_policy(preset, problem, **{**TINY, **kw}).eval()


def instances(problem: str, n: int = 12, b: int = 3, seed: int = 2):
    p = get_problem(problem)
    return p, p.make_env(num_loc=n), p.generator(num_loc=n)(b, seed=seed)


# ----------------------------------------------------------------------------- multistart
@pytest.mark.parametrize("problem", PROBLEMS)
def test_multistart_uses_distinct_first_nodes(problem):
    p, env, td = instances(problem)
    pol = tiny("pomo", problem)
    with torch.no_grad():
        out = pol(td, env, "multistart_greedy")
    n = p.num_starts(td)
    first = out.actions[:, :, 0]
    assert first.shape == (3, n)
    assert torch.equal(first, p.start_nodes(td, n))
    assert all(len(set(row.tolist())) == n for row in first)
    with torch.no_grad():
        few = pol(td, env, "multistart_sampling", num_starts=3, num_samples=2, seed=0)
    assert few.actions.shape[1] == 6
    assert torch.equal(few.actions[:, :, 0], p.start_nodes(td, 3).repeat_interleave(2, 1))


# ----------------------------------------------------------------------------- augmentation
def test_dihedral_transforms_are_the_eight_symmetries():
    locs = torch.rand(2, 9, 2)
    aug = dihedral_locs(locs)
    assert aug.shape == (2, 8, 9, 2)
    assert torch.equal(aug[:, 0], locs)
    # all eight distinct, all inside the square, all isometries
    flat = aug.flatten(2)
    assert len({tuple(r.tolist()) for r in flat[0]}) == 8
    assert aug.min() >= 0 and aug.max() <= 1
    d0 = torch.cdist(locs, locs)
    for a in range(8):
        assert torch.allclose(torch.cdist(aug[:, a], aug[:, a]), d0, atol=1e-6)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_costs_unchanged_by_augmentation(problem):
    p, env, td = instances(problem)
    pol = tiny("pomo", problem)
    with torch.no_grad():
        out = pol(td, env, "greedy")
    tours = out.actions[:, 0]
    aug = augment_instances(td, 8)
    base = p.cost(td, tours)
    assert torch.allclose(
        p.cost(aug, tours.repeat_interleave(8, 0)).view(3, 8), base[:, None].expand(3, 8), atol=1e-5
    )
    # the identity augmentation leaves the rollout unchanged
    ident = augment_instances(td, 1)
    with torch.no_grad():
        again = pol(ident, env, "greedy")
    assert torch.equal(again.actions, out.actions) and torch.allclose(again.reward, out.reward)


@pytest.mark.parametrize("problem", ("tsp", "cvrp"))
@pytest.mark.parametrize("strategy", ("greedy", "multistart_greedy"))
def test_eightfold_augmentation_is_best_of_separate_decodes(problem, strategy):
    p, env, td = instances(problem)
    pol = tiny("pomo", problem)
    with torch.no_grad():
        out = pol(td, env, strategy, augment=8, select_best=True)
    m = out.reward.shape[1]
    s = m // 8
    per_aug = out.reward.view(3, 8, s)
    aug = augment_instances(td, 8)
    for a in range(8):
        one = aug[torch.arange(3) * 8 + a]
        with torch.no_grad():
            sep = pol(one, env, strategy)
        # separate decode of augmented coordinates; costs agree up to float rounding of 1 - x
        assert torch.allclose(sep.reward, per_aug[:, a], atol=1e-4), a
    assert torch.allclose(out.best_reward, out.reward.max(1).values)
    with torch.no_grad():
        plain = pol(td, env, strategy)
    assert (out.best_reward >= plain.best_reward - 1e-5).all()


# ----------------------------------------------------------------------------- beam search
@pytest.mark.parametrize("problem", PROBLEMS)
def test_beam_width_one_is_greedy(problem):
    p, env, td = instances(problem)
    pol = tiny("am", problem)
    with torch.no_grad():
        g = pol(td, env, "greedy")
        bm = pol(td, env, "beam_search", beam_width=1)
    assert torch.equal(g.actions, bm.actions)
    assert torch.allclose(g.log_likelihood, bm.log_likelihood, atol=1e-4)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_beam_scores_are_sorted_log_likelihoods(problem):
    p, env, td = instances(problem)
    pol = tiny("pomo", problem)
    with torch.no_grad():
        bm = pol(td, env, "beam_search", beam_width=4)
        ev = pol.evaluate(td, env, bm.actions)
    ll = bm.log_likelihood
    assert (ll[:, :-1] >= ll[:, 1:] - 1e-5).all()
    assert torch.allclose(ev.log_likelihood, ll, atol=1e-4)
    # distinct beams
    for row in bm.actions:
        assert len({tuple(r.tolist()) for r in row}) == 4


# ----------------------------------------------------------------------------- evaluate / sampling
@pytest.mark.parametrize("problem", PROBLEMS)
def test_evaluate_reproduces_decoded_log_likelihood(problem):
    p, env, td = instances(problem)
    pol = tiny("pomo-moe", problem)
    with torch.no_grad():
        g = pol(td, env, "greedy")
        ms = pol(
            td, env, "multistart_sampling", num_starts=4, num_samples=2, seed=5, temperature=1.5
        )
        ev_g = pol.evaluate(td, env, g.actions)
        ev_ms = pol.evaluate(td, env, ms.actions, forced_first=True, temperature=1.5)
    assert torch.allclose(ev_g.log_likelihood, g.log_likelihood, atol=1e-4)
    assert torch.allclose(ev_ms.log_likelihood, ms.log_likelihood, atol=1e-4)
    assert torch.allclose(ev_g.reward, g.reward)
    # with gradients the rollout's log-likelihood is the differentiable one and agrees too
    out = pol(td, env, "greedy")
    assert out.log_likelihood.requires_grad
    assert torch.allclose(out.log_likelihood.detach(), g.log_likelihood, atol=1e-4)


def test_sampling_seeds_and_filters():
    p, env, td = instances("cvrp")
    pol = tiny("am", "cvrp")
    with torch.no_grad():
        a = pol(td, env, "sampling", num_samples=4, seed=1)
        b = pol(td, env, "sampling", num_samples=4, seed=1)
        c = pol(td, env, "sampling", num_samples=4, seed=2)
        top1 = pol(td, env, "sampling", top_k=1, seed=3)
        cold = pol(td, env, "sampling", top_p=1e-6, seed=3)
        g = pol(td, env, "greedy")
    assert torch.equal(a.actions, b.actions) and not torch.equal(a.actions, c.actions)
    assert torch.equal(top1.actions, g.actions) and torch.equal(cold.actions, g.actions)
    assert (top1.log_likelihood == 0).all()  # the filtered distribution is a point mass


# ----------------------------------------------------------------------------- cache
@pytest.mark.parametrize("problem", PROBLEMS)
def test_cached_logits_equal_recomputed_keys(problem):
    """Decoding [B, S] rows from the per-instance cache gives the logits of recomputing all
    decoder keys from scratch, per row, at every step."""
    p, env, td = instances(problem, n=10, b=2)
    pol = tiny("pomo-moe", problem)
    dec = pol.decoder
    s = 5
    with torch.no_grad():
        cache, _ = _encode(pol.parts, td, 1)
        starts = p.start_nodes(td, s)
        state = env.reset(td[torch.arange(2).repeat_interleave(s)])
        state["action"] = starts.reshape(-1)
        state = env._step(state)
        first = starts if not p.has_depot else None
        n = cache.num_nodes
        for _ in range(6):
            mask = state["action_mask"].view(2, s, n)
            feats = p.state_features(state)
            cached, _ = dec(
                cache,
                state["current_node"].view(2, s),
                first,
                feats.view(2, s, -1) if dec.state_dim else None,
                mask,
            )
            fresh_cache = dec.precompute(cache.node_emb.repeat_interleave(s, 0).clone())
            fresh, _ = dec(
                fresh_cache,
                state["current_node"].view(2 * s, 1),
                None if first is None else first.reshape(2 * s, 1),
                feats.view(2 * s, 1, -1) if dec.state_dim else None,
                mask.view(2 * s, 1, n),
            )
            assert torch.allclose(cached.view(2 * s, 1, n), fresh, atol=1e-5)
            state["action"] = cached.masked_fill(~mask, float("-inf")).argmax(-1).reshape(-1)
            state = env._step(state)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_dropping_finished_instances_changes_nothing(problem):
    p, env, td = instances(problem, n=12, b=6)
    pol = tiny("pomo", problem)
    # greedy only: the sampling kernel's random stream is indexed by row, which compaction shifts
    for strategy in ("multistart_greedy", "greedy"):
        with torch.no_grad():
            a = pol(td, env, strategy, num_samples=3, seed=4, compact=True)
            b = pol(td, env, strategy, num_samples=3, seed=4, compact=False, check_done_every=3)
        t = a.actions.shape[-1]
        assert (
            torch.equal(a.actions, b.actions[..., :t])
            and (b.actions[..., t:] == b.actions[..., t - 1 : t]).all()
        )
        assert torch.allclose(a.log_likelihood, b.log_likelihood, atol=1e-5)
        assert torch.equal(a.reward, b.reward)


# ----------------------------------------------------------------------------- chunks and plans
@pytest.mark.parametrize("problem", PROBLEMS)
def test_chunked_decoding_equals_one_pass(problem):
    """max_rows splits augmentations and starts; greedy results are the same rows in order."""
    p, env, td = instances(problem, n=10, b=2)
    pol = tiny("pomo", problem)
    with torch.no_grad():
        full = pol(td, env, "multistart_greedy", augment=8)
        for max_rows in (1, 7, 2 * 10 * 3):
            part = pol(td, env, "multistart_greedy", augment=8, max_rows=max_rows)
            assert part.reward.shape == full.reward.shape
            torch.testing.assert_close(part.reward, full.reward)
            torch.testing.assert_close(part.log_likelihood, full.log_likelihood)
            assert torch.equal(part.best_reward, full.best_reward)
            # every row is the same solution (shorter chunks padded with the env's padding)
            cost = -p.cost(td[torch.arange(2).repeat_interleave(part.actions.shape[1])],
                           part.actions.reshape(-1, part.actions.shape[-1]))
            torch.testing.assert_close(cost.view(2, -1), full.reward)


def test_first_transform_selects_one_augmentation():
    p, env, td = instances("cvrp", n=10, b=2)
    pol = tiny("pomo", "cvrp")
    with torch.no_grad():
        full = pol(td, env, "multistart_greedy", augment=8)
        s = p.num_starts(td)
        for k in (0, 3, 7):
            one = pol(td, env, "multistart_greedy", augment=1, first_transform=k)
            torch.testing.assert_close(one.reward, full.reward[:, k * s : (k + 1) * s])
    with pytest.raises(ValueError, match="first_transform"):
        DecodeConfig(augment=2, first_transform=7)


def test_keep_top_returns_the_best_rows():
    p, env, td = instances("cvrp", n=10, b=3)
    pol = tiny("pomo", "cvrp")
    with torch.no_grad():
        full = pol(td, env, "multistart_greedy", augment=8)
        top = pol(td, env, "multistart_greedy", augment=8, keep_top=5)
    assert top.actions.shape[:2] == (3, 5) and top.reward.shape == (3, 5)
    want = full.reward.topk(5, dim=1).values
    torch.testing.assert_close(top.reward.sort(1, descending=True).values, want)
    torch.testing.assert_close(full.reward.gather(1, top.row_index), top.reward)
    assert torch.equal(top.best_reward, full.best_reward)


def test_random_starts_are_distinct_seeded_and_cover_the_instance():
    p, env, td = instances("cvrp", n=30, b=4)
    pol = tiny("pomo", "cvrp")
    with torch.no_grad():
        a = pol(td, env, "multistart_greedy", num_starts=6, start_choice="random", seed=3)
        b = pol(td, env, "multistart_greedy", num_starts=6, start_choice="random", seed=3)
        c = pol(td, env, "multistart_greedy", num_starts=6, start_choice="random", seed=4)
    first = a.actions[:, :, 0]
    assert torch.equal(first, b.actions[:, :, 0])
    assert not torch.equal(first, c.actions[:, :, 0])
    assert all(len(set(r.tolist())) == 6 for r in first)
    assert int(first.min()) >= 1 and int(first.max()) <= 30
    assert int(first.max()) > 6  # not just the first customers of the file order


@pytest.mark.parametrize("problem", PROBLEMS)
def test_candidate_restriction_decodes_feasible_plans(problem):
    p, env, td = instances(problem, n=25, b=3)
    pol = tiny("pomo", problem)
    with torch.no_grad():
        out = pol(td, env, "multistart_greedy", candidates=4, augment=2)
    flat = out.actions.reshape(-1, out.actions.shape[-1])
    rows = td[torch.arange(3).repeat_interleave(out.actions.shape[1])]
    assert all(v == [] for v in p.check(rows, flat))


def test_restrict_to_candidates_falls_back_when_no_near_customer_fits():
    knn = torch.tensor([[[1, 2], [2, 0], [1, 0], [2, 1]]])  # [B=1, N=4, k=2]
    mask = torch.tensor([[[False, True, True, True], [True, False, False, True]]])
    current = torch.tensor([[0, 1]])
    out = restrict_to_candidates(mask, knn, current, depot=True)
    # row 0 at the depot: customers 1, 2 are near and feasible, 3 is cut
    assert out[0, 0].tolist() == [False, True, True, False]
    # row 1 at node 1: its near nodes 2 and 0; only the depot is near and feasible, while
    # customer 3 is feasible: the full mask is kept (no forced return)
    assert out[0, 1].tolist() == mask[0, 1].tolist()


def test_deadline_stops_the_construction():
    p, env, td = instances("cvrp", n=20, b=2)
    pol = tiny("pomo", "cvrp")
    with torch.no_grad(), pytest.raises(DecodeTimeout):
        pol(td, env, "multistart_greedy", deadline=time.perf_counter() - 1.0)


def test_plan_keeps_full_pomo_for_small_instances_and_bounds_large_ones():
    small = plan_decode(101, 100)
    assert (small.num_starts, small.augment) == (100, 8)
    big = plan_decode(1001, 1000)
    assert big.augment == 8 and 8 <= big.num_starts < 1000
    # the work per instance stays within the budget
    assert big.augment * big.num_starts * 1001 * big.est_steps <= DEFAULT_WORK_BUDGET
    huge = plan_decode(5001, 5000)
    assert huge.num_starts >= 1 and huge.augment >= 1
    # memory: rows per chunk follow the budget, at least one
    assert plan_decode(1001, 1000, memory_budget=10**8).max_rows < big.max_rows
    assert plan_decode(5001, 5000, memory_budget=1).max_rows == 1
    # explicit requests are honoured, capped by the candidates
    assert plan_decode(1001, 1000, num_starts=5000).num_starts == 1000
    assert plan_decode(1001, 1000, work_budget=None).num_starts == 1000
    with pytest.raises(ValueError):
        plan_decode(0, 1)
