"""Tests for nco.policies.moe (CPU, small shapes)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nco.policies.moe import FFN, MoE, MoEConfig, MoEStats

D, H = 8, 16
ROUTERS = ("topk", "loss_free", "expert_choice", "hierarchical")
LEVELS = ("node", "instance", "problem")


def _moe(**kw: object) -> MoE:
    torch.manual_seed(0)
    return MoE(D, H, MoEConfig(**kw))  # type: ignore[arg-type]


def _force_router(moe: MoE, expert_of_feature: dict[int, int], strength: float = 50.0) -> None:
    """Router logits: feature ``f`` of the input votes for expert ``expert_of_feature[f]``."""
    with torch.no_grad():
        moe.router.weight.zero_()
        for f, e in expert_of_feature.items():
            moe.router.weight[e, f] = strength


def _constant_experts(moe: MoE) -> None:
    """Expert ``e`` outputs the constant vector ``(e + 1) * ones`` whatever its input."""
    with torch.no_grad():
        moe.w2.zero_()
        for e in range(moe.config.num_experts):
            moe.b2[e].fill_(e + 1.0)


def _check_stats(stats: MoEStats, num_experts: int) -> None:
    for name, value in stats._asdict().items():
        assert torch.isfinite(value).all(), name
    assert stats.load.shape == (num_experts,)
    assert torch.all(stats.load >= 0)
    if stats.dense_fraction < 1:
        assert stats.load.sum().item() == pytest.approx(1.0, abs=1e-5)
    for name in ("dropped_fraction", "entropy", "aux_loss", "z_loss", "dense_fraction"):
        assert getattr(stats, name).shape == ()
    assert 0 <= stats.dropped_fraction.item() <= 1
    assert 0 <= stats.dense_fraction.item() <= 1
    assert 0 <= stats.entropy.item() <= math.log(num_experts) + 1e-5


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "kw",
    [
        {"router": "nope"},
        {"level": "edge"},
        {"activation": "tanh"},
        {"k": 0},
        {"k": 5, "num_experts": 4},
        {"capacity_factor": 0.0},
        {"num_experts": 0, "k": 1},
    ],
)
def test_config_rejects_bad_values(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MoEConfig(**kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- dense equivalence
@pytest.mark.parametrize("activation", ["relu", "gelu", "swiglu"])
@pytest.mark.parametrize("router", ["topk", "loss_free", "expert_choice"])
def test_single_expert_equals_dense_ffn(activation: str, router: str) -> None:
    moe = _moe(num_experts=1, k=1, router=router, activation=activation)
    ffn = FFN(D, H, activation)
    with torch.no_grad():
        ffn.w1.copy_(moe.w1[0])
        ffn.b1.copy_(moe.b1[0])
        ffn.w2.copy_(moe.w2[0])
        ffn.b2.copy_(moe.b2[0])
    x = torch.randn(3, 5, D)
    y, stats = moe(x)
    torch.testing.assert_close(y, ffn(x))
    assert stats.load.tolist() == [1.0]
    _check_stats(stats, 1)


@pytest.mark.parametrize("k", [1, 2])
def test_forced_single_expert_with_weight_one_equals_dense(k: int) -> None:
    """All tokens forced to expert 2 with weight ~1 -> expert 2's FFN."""
    moe = _moe(num_experts=4, k=k)
    x = torch.randn(4, 6, D)
    x[..., 0] = 1.0  # feature 0 is the routing signal
    _force_router(moe, {0: 2}, strength=1000.0)
    ffn = FFN(D, H)
    with torch.no_grad():
        for name in ("w1", "b1", "w2", "b2"):
            getattr(ffn, name).copy_(getattr(moe, name)[2])
    y, stats = moe(x)
    if k == 1:
        torch.testing.assert_close(y, ffn(x))
        assert stats.load.tolist() == [0.0, 0.0, 1.0, 0.0]
    else:  # second choice has weight ~exp(-1000) -> negligible
        torch.testing.assert_close(y, ffn(x))
        assert stats.load[2].item() == pytest.approx(0.5)


# ---------------------------------------------------------------------------- routing
@pytest.mark.parametrize("router", ["topk", "loss_free", "hierarchical"])
def test_routing_goes_where_the_gate_says(router: str) -> None:
    moe = _moe(num_experts=4, k=1, router=router).eval()
    _force_router(moe, {0: 0, 1: 1, 2: 2, 3: 3})
    _constant_experts(moe)
    if router == "hierarchical":  # force the MoE branch with probability ~1
        with torch.no_grad():
            moe.dense_gate.weight.zero_()
            moe.dense_gate.weight[1, 7] = 100.0
    B, N = 2, 8
    target = torch.arange(B * N).reshape(B, N) % 4
    x = torch.zeros(B, N, D)
    x.scatter_(-1, target[..., None], 1.0)
    x[..., 7] = 1.0
    y, stats = moe(x)
    expected = (target + 1).float()[..., None].expand(B, N, D)  # prob ~1 for k=1 (Switch)
    torch.testing.assert_close(y, expected)
    assert stats.load.tolist() == [0.25] * 4
    routing = moe.route(x)
    assert torch.equal(routing.mask.float().argmax(-1), target)
    assert routing.mask.sum(-1).eq(1).all()


def test_topk_k2_renormalised_combine() -> None:
    moe = _moe(num_experts=4, k=2).eval()
    _constant_experts(moe)
    x = torch.randn(3, 5, D)
    routing = moe.route(x)
    torch.testing.assert_close(routing.combine.sum(-1), torch.ones(3, 5))
    assert routing.mask.sum(-1).eq(2).all()
    y, _ = moe(x)
    expected = (routing.combine * torch.arange(1.0, 5.0)).sum(-1)
    torch.testing.assert_close(y, expected[..., None].expand_as(y))


def test_k1_uses_raw_softmax_probability() -> None:
    moe = _moe(num_experts=4, k=1).eval()
    x = torch.randn(2, 5, D)
    probs = torch.softmax(moe.router(x), dim=-1)
    routing = moe.route(x)
    torch.testing.assert_close(routing.combine.sum(-1), probs.max(-1).values)


# ---------------------------------------------------------------------------- capacity
def test_token_choice_capacity_drops_and_reports_fraction() -> None:
    moe = _moe(num_experts=4, k=1, capacity_factor=1.0)
    _force_router(moe, {0: 1})
    _constant_experts(moe)
    x = torch.zeros(2, 10, D)
    x[..., 0] = 1.0  # all 20 tokens want expert 1; capacity = ceil(1.0 * 20 * 1 / 4) = 5
    y, stats = moe(x)
    assert stats.dropped_fraction.item() == pytest.approx(15 / 20)
    routing = moe.route(x)
    assert routing.capacity == 5
    assert routing.mask.sum().item() == 5
    kept = routing.mask.any(-1)
    # dropped tokens get 0 from the MoE, kept ones expert 1's constant 2 (times prob ~1)
    torch.testing.assert_close(y[~kept], torch.zeros(15, D))
    torch.testing.assert_close(y[kept], torch.full((5, D), 2.0))
    # priority is token order: the first five tokens of the batch are kept
    assert kept.reshape(-1)[:5].all() and not kept.reshape(-1)[5:].any()


def test_token_choice_capacity_k2_first_choices_first() -> None:
    moe = _moe(num_experts=4, k=2, capacity_factor=0.5)
    with torch.no_grad():  # expert 0 first choice, expert 1 second choice, for every token
        moe.router.weight.zero_()
        moe.router.weight[0, 0] = 20.0
        moe.router.weight[1, 0] = 10.0
    x = torch.zeros(1, 8, D)
    x[..., 0] = 1.0
    routing = moe.route(x)  # capacity = ceil(0.5 * 8 * 2 / 4) = 2
    assert routing.capacity == 2
    assert routing.mask.sum(1).tolist() == [[2, 2, 0, 0]]
    _, stats = moe(x)
    assert stats.dropped_fraction.item() == pytest.approx(12 / 16)


def test_no_capacity_no_drops() -> None:
    moe = _moe(num_experts=4, k=2)
    _force_router(moe, {0: 1})
    x = torch.zeros(2, 10, D)
    x[..., 0] = 1.0
    _, stats = moe(x)
    assert stats.dropped_fraction.item() == 0.0


@pytest.mark.parametrize("cf", [None, 0.5, 1.0, 2.0])
def test_expert_choice_respects_capacity(cf: float | None) -> None:
    moe = _moe(num_experts=4, k=2, router="expert_choice", capacity_factor=cf)
    x = torch.randn(3, 7, D)
    routing = moe.route(x)
    T = 21
    capacity = min(T, math.ceil((1.0 if cf is None else cf) * T * 2 / 4))
    assert routing.capacity == capacity
    per_expert = routing.mask.reshape(T, 4).sum(0)
    assert (per_expert <= capacity).all()
    assert (per_expert == capacity).all()  # every expert fills its capacity
    _, stats = moe(x)
    unpicked = (~routing.mask.reshape(T, 4).any(-1)).float().mean()
    assert stats.dropped_fraction.item() == pytest.approx(unpicked.item())
    assert stats.aux_loss.item() == 0.0
    _check_stats(stats, 4)


def test_expert_choice_skewed_input_drops_unpicked_tokens() -> None:
    moe = _moe(num_experts=2, k=1, router="expert_choice", capacity_factor=0.5)
    _force_router(moe, {0: 0}, strength=2.0)  # no saturation: distinct scores
    _constant_experts(moe)
    x = torch.zeros(1, 8, D)
    x[..., 0] = torch.linspace(1.0, 0.0, 8)  # scores favour earlier tokens for expert 0
    routing = moe.route(x)  # capacity = ceil(0.5 * 8 / 2) = 2 per expert
    assert routing.mask.reshape(8, 2).sum(0).tolist() == [2, 2]
    # expert 0 takes the two highest-score tokens, expert 1 the two lowest-score tokens
    assert routing.mask[0, :2, 0].all() and routing.mask[0, -2:, 1].all()
    y, stats = moe(x)
    assert stats.dropped_fraction.item() == pytest.approx(4 / 8)
    torch.testing.assert_close(y[0, 2:6], torch.zeros(4, D))


# ---------------------------------------------------------------------------- losses
def test_aux_loss_sends_gradient_to_router() -> None:
    moe = _moe(num_experts=4, k=2, router="topk", z_loss=True)
    _, stats = moe(torch.randn(4, 6, D))
    stats.aux_loss.backward()
    assert moe.router.weight.grad is not None
    assert moe.router.weight.grad.abs().sum() > 0
    assert moe.w1.grad is None  # the aux loss touches the router only
    moe.zero_grad()
    _, stats = moe(torch.randn(4, 6, D))
    stats.z_loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_aux_loss_is_one_for_uniform_router() -> None:
    moe = _moe(num_experts=4, k=1)
    with torch.no_grad():
        moe.router.weight.zero_()  # uniform probs: E * sum f_e * 1/E = 1
    _, stats = moe(torch.randn(2, 5, D))
    assert stats.aux_loss.item() == pytest.approx(1.0)
    assert stats.entropy.item() == pytest.approx(math.log(4), abs=1e-5)


def test_z_loss_zero_when_disabled() -> None:
    _, stats = _moe()(torch.randn(2, 3, D))
    assert stats.z_loss.item() == 0.0


# ---------------------------------------------------------------------------- loss-free
def test_loss_free_bias_is_buffer_without_gradient() -> None:
    moe = _moe(num_experts=4, k=1, router="loss_free")
    assert "expert_bias" in dict(moe.named_buffers())
    assert "expert_bias" not in dict(moe.named_parameters())
    assert all(p is not moe.expert_bias for p in moe.parameters())
    assert "expert_bias" in moe.state_dict()
    y, stats = moe(torch.randn(3, 4, D))
    assert stats.aux_loss.item() == 0.0
    (y.square().sum() + stats.aux_loss).backward()
    assert not moe.expert_bias.requires_grad and moe.expert_bias.grad is None
    assert moe.router.weight.grad is not None  # the router still learns from the task loss


def test_loss_free_bias_balances_skewed_load() -> None:
    moe = _moe(num_experts=4, k=1, router="loss_free", bias_update_rate=0.01)
    torch.manual_seed(1)
    x = torch.randn(8, 16, D)
    with torch.no_grad():  # skew: feature 0 is large and votes for expert 0
        moe.router.weight.normal_(0.0, 0.3)
        moe.router.weight[0, 0] = 0.5
    x[..., 0] += 2.0
    max_loads = []
    for _ in range(100):
        _, stats = moe(x)
        max_loads.append(stats.load.max().item())
    assert max_loads[0] > 0.6  # heavily skewed at the start (balance is 0.25)
    # monotone-ish: the max load over each window of 10 steps never rises by more than 0.02
    window = [max(max_loads[i : i + 10]) for i in range(0, 100, 10)]
    assert all(b <= a + 0.02 for a, b in zip(window, window[1:]))
    assert max(max_loads[-20:]) < 0.32  # ends near balance
    assert moe.expert_bias[0] < 0  # the overloaded expert got a negative bias


def test_loss_free_combine_uses_unbiased_scores_and_eval_freezes_bias() -> None:
    moe = _moe(num_experts=4, k=1, router="loss_free").eval()
    with torch.no_grad():
        moe.expert_bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0]))  # choice always expert 3
    x = torch.randn(2, 5, D)
    routing = moe.route(x)
    assert routing.mask[..., 3].all()
    probs = torch.softmax(moe.router(x), dim=-1)
    torch.testing.assert_close(routing.combine[..., 3], probs[..., 3])
    before = moe.expert_bias.clone()
    moe(x)
    assert torch.equal(moe.expert_bias, before)  # no update in eval mode
    moe.train()
    with torch.no_grad():  # training mode updates even under no_grad
        moe(x)
    assert not torch.equal(moe.expert_bias, before)


# ---------------------------------------------------------------------------- levels
@pytest.mark.parametrize("router", ["topk", "loss_free", "expert_choice"])
def test_instance_level_routes_whole_instances(router: str) -> None:
    moe = _moe(num_experts=4, k=2, router=router, level="instance").eval()
    x = torch.randn(6, 9, D)
    routing = moe.route(x)
    for field in (routing.mask, routing.combine):
        assert torch.equal(field, field[:, :1].expand_as(field))
    # routed by the instance mean
    means = x.mean(1, keepdim=True).expand_as(x)
    torch.testing.assert_close(moe.route(means).combine, routing.combine)


@pytest.mark.parametrize("router", ["topk", "loss_free", "expert_choice"])
def test_problem_level_routes_whole_groups(router: str) -> None:
    moe = _moe(num_experts=4, k=1, router=router, level="problem").eval()
    x = torch.randn(6, 5, D)
    groups = torch.tensor([3, 1, 3, 1, 7, 3])
    routing = moe.route(x, groups=groups)
    for g in groups.unique():
        sel = routing.combine[groups == g].reshape(-1, 4)
        assert torch.equal(sel, sel[:1].expand_as(sel))
    # groups=None -> one group: every token routed alike
    whole = moe.route(x).mask.reshape(-1, 4)
    assert torch.equal(whole, whole[:1].expand_as(whole))
    y, stats = moe(x, groups=groups)
    assert y.shape == x.shape
    _check_stats(stats, 4)


def test_problem_level_group_mean_matches_single_group() -> None:
    moe = _moe(num_experts=4, k=2, level="problem").eval()
    x = torch.randn(4, 3, D)
    groups = torch.tensor([0, 1, 0, 1])
    y, _ = moe(x, groups=groups)
    y0, _ = moe(x[groups == 0])
    torch.testing.assert_close(y[groups == 0], y0)


def test_groups_shape_is_checked() -> None:
    moe = _moe(level="problem")
    with pytest.raises(ValueError):
        moe(torch.randn(4, 3, D), groups=torch.zeros(3, dtype=torch.long))


# ---------------------------------------------------------------------------- hierarchical
@pytest.mark.parametrize("level", LEVELS)
def test_hierarchical_gate_gets_gradient(level: str) -> None:
    moe = _moe(num_experts=4, k=2, router="hierarchical", level=level)
    torch.manual_seed(3)
    x = torch.randn(6, 5, D)
    y, stats = moe(x, groups=torch.tensor([0, 0, 1, 1, 2, 2]))
    (y.square().sum() + stats.aux_loss).backward()
    assert moe.dense_gate.weight.grad is not None
    assert moe.dense_gate.weight.grad.abs().sum() > 0
    assert 0.0 <= stats.dense_fraction.item() <= 1.0
    _check_stats(stats, 4)


def test_hierarchical_branches_and_scale() -> None:
    moe = _moe(num_experts=4, k=1, router="hierarchical", level="instance").eval()
    _constant_experts(moe)
    with torch.no_grad():  # instance 0 -> dense (feature 6), instance 1 -> MoE (feature 7)
        moe.dense_gate.weight.zero_()
        moe.dense_gate.weight[0, 6] = 3.0
        moe.dense_gate.weight[1, 7] = 3.0
    x = torch.zeros(2, 4, D)
    x[0, :, 6] = 1.0
    x[1, :, 7] = 1.0
    y, stats = moe(x)
    routing = moe.route(x)
    assert routing.dense is not None and routing.scale is not None
    assert routing.dense[0].all() and not routing.dense[1].any()
    assert stats.dense_fraction.item() == pytest.approx(0.5)
    p = torch.softmax(torch.tensor([3.0, 0.0]), 0)[0]
    torch.testing.assert_close(y[0], moe.dense(x[0]) * p)
    assert not routing.mask[0].any()  # dense-branch tokens skip the experts
    moe_part = (routing.combine[1] * torch.arange(1.0, 5.0)).sum(-1, keepdim=True) * p
    torch.testing.assert_close(y[1], moe_part.expand(4, D))


def test_hierarchical_problem_level_is_one_decision_per_batch() -> None:
    moe = _moe(num_experts=4, k=2, router="hierarchical", level="problem")
    for _ in range(5):
        routing = moe.route(torch.randn(3, 4, D))
        assert routing.dense is not None
        assert routing.dense.all() or not routing.dense.any()
    with torch.no_grad():  # all dense: load is all zeros, stats stay finite
        moe.dense_gate.weight.zero_()
        moe.dense_gate.weight[0, 0] = 100.0
    x = torch.zeros(3, 4, D)
    x[..., 0] = 1.0
    y, stats = moe.eval()(x)
    assert stats.dense_fraction.item() == 1.0
    assert stats.load.sum().item() == 0.0
    _check_stats(stats, 4)


# ---------------------------------------------------------------------------- generic
@pytest.mark.parametrize("router", ROUTERS)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("shape", [(3, 5, D), (7, D)])
def test_shapes_stats_and_backward(router: str, level: str, shape: tuple[int, ...]) -> None:
    moe = _moe(
        num_experts=4,
        k=2,
        router=router,
        level=level,
        capacity_factor=1.0,
        z_loss=True,
        noisy_gating=True,
        activation="swiglu",
    )
    x = torch.randn(*shape, requires_grad=True)
    groups = torch.arange(shape[0]) % 2
    y, stats = moe(x, groups=groups)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    _check_stats(stats, 4)
    (y.square().mean() + stats.aux_loss + stats.z_loss).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert moe.w1.grad is not None and torch.isfinite(moe.w1.grad).all()


@pytest.mark.parametrize("router", ROUTERS)
def test_no_grad_and_eval_are_deterministic(router: str) -> None:
    moe = _moe(num_experts=4, k=2, router=router, noisy_gating=True).eval()
    x = torch.randn(3, 5, D)
    state = {k: v.clone() for k, v in moe.state_dict().items()}
    with torch.no_grad():
        y1, s1 = moe(x)
        y2, s2 = moe(x)
    assert not y1.requires_grad
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(s1.load, s2.load)
    for k, v in moe.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_two_dim_input_matches_one_token_instances() -> None:
    moe = _moe(num_experts=4, k=2).eval()
    x = torch.randn(5, D)
    y2, _ = moe(x)
    y3, _ = moe(x[:, None, :])
    torch.testing.assert_close(y2, y3[:, 0])


def test_expert_weights_are_stacked_parameters() -> None:
    moe = _moe(num_experts=3, k=1, activation="swiglu")
    assert moe.w1.shape == (3, D, 2 * H) and moe.w2.shape == (3, H, D)
    assert moe.b1.shape == (3, 2 * H) and moe.b2.shape == (3, D)
    assert isinstance(moe.router, nn.Linear) and moe.router.bias is None


def test_wrong_input_width_raises() -> None:
    with pytest.raises(ValueError):
        _moe()(torch.randn(2, 3, D + 1))
