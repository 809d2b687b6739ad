"""Tests for nco.policies: presets, building, feasibility of every strategy, gradients, MoE."""

from __future__ import annotations

import json

import pytest
import torch

from nco.policies import (
    PRESETS,
    STRATEGIES,
    DecodeConfig,
    PolicyConfig,
    get_preset,
)
from tests.policies.helpers import expand_rows, instances, tiny

PROBLEMS = ("tsp", "cvrp", "cvrptw")


# ----------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", PRESETS)
def test_preset_roundtrip_through_plain_dict(name):
    cfg = get_preset(name)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert PolicyConfig.from_dict(d) == cfg


def test_preset_shapes_match_the_papers():
    am, pomo, moe, rf = (get_preset(n) for n in ("am", "pomo", "pomo-moe", "rf-transformer"))
    assert (am.num_layers, am.d_model, am.num_heads, am.d_ff, am.norm) == (3, 128, 8, 512, "batch")
    assert (pomo.num_layers, pomo.norm, pomo.decoding) == (6, "instance", "multistart_greedy")
    assert moe.encoder_moe_layers == tuple(range(6))
    assert moe.moe.num_experts == 4 and moe.moe.k == 2 and moe.decoder_moe.router == "hierarchical"
    assert (rf.layer, rf.norm, rf.ffn, rf.num_layers) == ("pre_norm", "rms", "swiglu", 6)


def test_config_rejects_typos_and_bad_values():
    with pytest.raises(TypeError):
        get_preset("pomo", num_layer=2)
    with pytest.raises(ValueError):
        get_preset("pomo", d_model=30, num_heads=8)
    with pytest.raises(ValueError):
        get_preset("pomo-moe", num_layers=2, moe_layers=(0, 5))
    with pytest.raises(ValueError):
        get_preset("nope")
    with pytest.raises(ValueError):
        DecodeConfig(strategy="nope")
    with pytest.raises(ValueError):
        DecodeConfig(augment=9)
    with pytest.raises(ValueError):
        DecodeConfig(augment=4, first_transform=5)


def test_moe_layers_placement():
    pol = tiny("pomo-moe", "cvrp", moe_layers=(1,))
    assert [layer.moe is not None for layer in pol.encoder.layers] == [False, True]
    assert pol.decoder.moe is not None and pol.decoder.out is None


def test_depot_embedding_follows_the_flag_in_the_data():
    pol = tiny("pomo", "cvrp")
    p, _, td = instances("cvrp")
    feats = p.node_features(td)
    emb = pol.encoder.init_embedding
    h = emb(feats)
    moved = feats.clone()
    moved[:, 0, -1], moved[:, 1, -1] = 0.0, 1.0
    h2 = emb(moved)
    assert torch.allclose(h2[:, 1], emb.depot(feats[:, 1, :-1]))
    assert torch.allclose(h2[:, 0], emb.node(feats[:, 0, :-1]))
    assert torch.allclose(h[:, 2:], h2[:, 2:])


# ----------------------------------------------------------------------------- feasibility
@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_strategy_is_feasible_and_rewards_are_minus_cost(preset, problem):
    pol = tiny(preset, problem).eval()
    p, env, td = instances(problem)
    for strategy in STRATEGIES:
        for aug in (1, 8) if strategy in ("greedy", "multistart_greedy") else (1,):
            cfg = DecodeConfig(
                strategy=strategy, augment=aug, num_samples=2, beam_width=3, num_starts=4, seed=3
            )
            with torch.no_grad():
                out = pol(td, env, cfg)
            b, m, t = out.actions.shape
            assert b == 3 and out.reward.shape == (3, m) and out.log_likelihood.shape == (3, m)
            rows = expand_rows(td, m)
            flat = out.actions.reshape(-1, t)
            assert all(not v for v in p.check(rows, flat)), (strategy, aug)
            assert torch.allclose(out.reward, -p.cost(rows, flat).view(3, m))
            assert torch.equal(out.best_reward, out.reward.max(1).values)
            assert torch.allclose(out.best_reward, -p.cost(td, out.best_actions))
            assert torch.isfinite(out.log_likelihood).all() and (out.log_likelihood <= 1e-5).all()


def test_reward_is_computed_on_the_original_distances():
    """An explicit ``distance`` matrix (not Euclidean) drives the reward, with augmentation too."""
    pol = tiny("pomo", "cvrp").eval()
    p, env, td = instances("cvrp")
    d = torch.cdist(td["locs"], td["locs"], p=1)  # Manhattan: not invariant to the x/y swap
    td.set("distance", d)
    with torch.no_grad():
        out = pol(td, env, "multistart_greedy", augment=8)
    m = out.reward.shape[1]
    assert torch.allclose(
        out.reward, -p.cost(expand_rows(td, m), out.actions.flatten(0, 1)).view(3, m)
    )


# ----------------------------------------------------------------------------- gradients / MoE
def test_gradients_reach_encoder_and_moe_routers():
    pol = tiny("pomo-moe", "cvrp").train()
    p, env, td = instances("cvrp", n=10, b=4)
    out = pol(td, env, "multistart_sampling", select_best=False, seed=0)
    assert out.log_likelihood.shape == (4, 10) and out.log_likelihood.requires_grad
    adv = out.reward - out.reward.mean(1, keepdim=True)
    loss = -(adv * out.log_likelihood).mean() + 0.01 * out.moe_stats.aux_loss
    loss.backward()

    def nonzero(param):
        return param.grad is not None and param.grad.abs().sum() > 0

    assert nonzero(pol.encoder.init_embedding.node.weight)
    assert nonzero(pol.encoder.layers[0].attn.qkv.weight)
    assert all(nonzero(layer.moe.router.weight) for layer in pol.encoder.layers)
    assert nonzero(pol.decoder.moe.router.weight) or nonzero(pol.decoder.moe.dense_gate.weight)
    assert nonzero(pol.decoder.project_keys.weight)


def test_no_grad_rollout_has_no_graph():
    pol = tiny("pomo", "tsp")
    _, env, td = instances("tsp")
    with torch.no_grad():
        out = pol(td, env, "multistart_greedy")
    assert not out.log_likelihood.requires_grad


def test_moe_stats_are_finite_and_aggregated():
    pol = tiny("pomo-moe", "cvrptw").eval()
    _, env, td = instances("cvrptw")
    with torch.no_grad():
        out = pol(td, env, "multistart_greedy")
    s = out.moe_stats
    assert s is not None and len(s.layers) == 3  # 2 encoder layers + the decoder
    assert s.load.shape == (4,)
    for v in (s.load, s.entropy, s.dropped_fraction, s.dense_fraction, s.aux_loss, s.z_loss):
        assert torch.isfinite(v).all()
    assert out.moe_stats is not None
    plain = tiny("pomo", "cvrptw")
    with torch.no_grad():
        assert plain(td, env, "greedy").moe_stats is None


# ----------------------------------------------------------------------------- devices
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available on this machine")
@pytest.mark.parametrize("problem", PROBLEMS)
def test_cuda_matches_cpu_greedy(problem):
    pol = tiny("pomo-moe", problem).eval()
    p, env, td = instances(problem)
    with torch.no_grad():
        cpu = pol(td, env, "multistart_greedy")
        pol_c = pol.to("cuda")
        env_c = p.make_env(num_loc=10, device="cuda")
        gpu = pol_c(td.to("cuda"), env_c, "multistart_greedy")
        samp = pol_c(td.to("cuda"), env_c, "sampling", num_samples=4, seed=0)
    assert gpu.reward.device.type == "cuda"
    assert torch.allclose(cpu.best_reward, gpu.best_reward.cpu(), atol=1e-4)
    m = samp.actions.shape[1]
    td_c = td.to("cuda")
    assert all(
        not v
        for v in p.check(
            td_c[torch.arange(3, device="cuda").repeat_interleave(m)], samp.actions.flatten(0, 1)
        )
    )
