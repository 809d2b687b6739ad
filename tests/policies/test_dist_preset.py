"""Tests for the ``pomo-dist`` preset: ICAM's distance bias and ReLD's decoder.

The formulas are checked against plain re-implementations written from the papers (no cache, no
folding, no chunking): Zhou et al. 2024 (ICAM) ``-alpha * log2(N) * d_ij`` on every attention
score and on the pointer compatibility before tanh clipping; Huang et al. 2025 (ReLD)
``h = q + W_o MHA(q, K, V)``, ``h = h + FF(h)``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import nco.policies.encoder as encoder_mod
from nco.checkpoints import EXPORT_FORMAT, checkpoint_info, load_model
from nco.policies import (
    STRATEGIES,
    AttentionPolicy,
    DecodeConfig,
    PolicyConfig,
    build_policy,
    get_preset,
)
from nco.policies.decoding import _encode, dihedral_locs
from nco.policies.encoder import (
    MultiHeadAttention,
    bias_chunk_rows,
    pairwise_distance,
    size_scale,
)
from tests.policies.helpers import TINY, expand_rows, instances, tiny

OLD_PRESETS = ("am", "pomo", "pomo-moe", "rf-transformer")


def first_step(pol: AttentionPolicy, td, env, s: int):
    """Cache and the state after forcing s POMO starts: (cache, current, first, state, mask)."""
    p = pol.problem
    b = td.batch_size[0]
    cache, _ = _encode(pol.parts, td, 1)
    starts = p.start_nodes(td, s)
    state = env.reset(expand_rows(td, s))
    state["action"] = starts.reshape(-1)
    state = env._step(state)
    n = cache.num_nodes
    feats = p.state_features(state).view(b, s, -1) if pol.decoder.state_dim else None
    first = None if p.has_depot else starts
    mask = state["action_mask"].view(b, s, n)
    return cache, state["current_node"].view(b, s), first, feats, mask


def set_alphas(pol: AttentionPolicy, value: float) -> None:
    with torch.no_grad():
        for name, prm in pol.named_parameters():
            if name.endswith("_alpha"):
                prm.fill_(value)


# ----------------------------------------------------------------------------- config
def test_preset_fields_and_plain_dict_round_trip():
    cfg = get_preset("pomo-dist")
    assert cfg.attn_dist_bias and cfg.decoder_residual_ffn
    assert (cfg.num_layers, cfg.norm, cfg.decoding) == (6, "instance", "multistart_greedy")
    assert PolicyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for name in OLD_PRESETS:
        old = get_preset(name)
        assert not old.attn_dist_bias and not old.decoder_residual_ffn
        # a checkpoint written before the fields existed
        legacy = {
            k: v
            for k, v in old.to_dict().items()
            if k not in ("attn_dist_bias", "decoder_residual_ffn")
        }
        assert PolicyConfig.from_dict(legacy) == old
    with pytest.raises(ValueError):
        get_preset("pomo", attn_dist_bias="yes")


def test_train_config_accepts_the_preset():
    from nco.train import TrainConfig

    cfg = TrainConfig(problem="cvrp", size=10, preset="pomo-dist", policy=TINY).resolved()
    pcfg = cfg.policy_config()
    assert pcfg.attn_dist_bias and pcfg.decoder_residual_ffn and pcfg.d_model == 32
    assert cfg.decoding == "multistart_sampling" and cfg.baseline == "shared"


def test_old_presets_have_no_new_parameters():
    """Old checkpoints' state dicts fit exactly (no alpha, no decoder FFN)."""
    for name in OLD_PRESETS:
        keys = tiny(name, "cvrp").state_dict().keys()
        assert not [k for k in keys if "alpha" in k or k.startswith("decoder.ffn")], name
    keys = set(tiny("pomo-dist", "cvrp").state_dict())
    assert {"decoder.glimpse_alpha", "decoder.pointer_alpha", "decoder.ffn.w1.weight"} <= keys
    assert "encoder.layers.0.attn.dist_alpha" in keys


# ----------------------------------------------------------------------------- feasibility
@pytest.mark.parametrize("problem", ("cvrp", "tsp"))
def test_every_strategy_is_feasible(problem):
    pol = tiny("pomo-dist", problem).eval()
    p, env, td = instances(problem)
    for strategy in STRATEGIES:
        for aug in (1, 8):
            cfg = DecodeConfig(
                strategy=strategy, augment=aug, num_samples=2, beam_width=3, num_starts=4, seed=3
            )
            with torch.no_grad():
                out = pol(td, env, cfg)
            b, m, t = out.actions.shape
            rows = expand_rows(td, m)
            flat = out.actions.reshape(-1, t)
            assert all(not v for v in p.check(rows, flat)), (strategy, aug)
            assert torch.allclose(out.reward, -p.cost(rows, flat).view(b, m))
            assert torch.isfinite(out.log_likelihood).all()


def test_dropping_finished_instances_keeps_the_bias_rows():
    """``compact`` selects the cached coordinates with the other cache tensors."""
    pol = tiny("pomo-dist", "cvrp").eval()
    _, env, td = instances("cvrp", n=12, b=6)
    with torch.no_grad():
        a = pol(td, env, "multistart_greedy", compact=True)
        b = pol(td, env, "multistart_greedy", compact=False, check_done_every=3)
    t = a.actions.shape[-1]
    assert torch.equal(a.actions, b.actions[..., :t])
    assert torch.equal(a.reward, b.reward)


# ----------------------------------------------------------------------------- formulas
def reference_attention(attn: MultiHeadAttention, x, coords):
    """Plain multi-head self-attention with ICAM's bias, [B, H, N, N] materialised."""
    b, n, d = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).chunk(3, -1)

    def heads(t):
        return t.view(b, n, h, d // h).transpose(1, 2)

    score = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(d // h)
    dist = torch.cdist(coords, coords, compute_mode="donot_use_mm_for_euclid_dist")
    score = score - attn.dist_alpha.view(1, h, 1, 1) * math.log2(n) * dist[:, None]
    y = (score.softmax(-1) @ heads(v)).transpose(1, 2).reshape(b, n, d)
    return attn.out(y)


def reference_logits(pol: AttentionPolicy, node_emb, coords, current, state, mask):
    """``C tanh(u)`` of the cvrp decoder from the papers' formulas (no cache, no fold)."""
    dec = pol.decoder
    b, n, d = node_emb.shape
    h = dec.num_heads
    s = current.shape[1]
    gk, gv, lk = dec.project_keys(node_emb).chunk(3, -1)
    cur = node_emb.gather(1, current[..., None].expand(b, s, d))
    q = dec.proj_graph(node_emb.mean(1, keepdim=True)) + dec.proj_current(cur)
    q = q + dec.proj_state(state)

    def heads(t):
        return t.reshape(b, -1, h, d // h).transpose(1, 2)

    score = heads(q) @ heads(gk).transpose(-1, -2) / math.sqrt(d // h)
    here = coords.gather(1, current[..., None].expand(b, s, 2))
    dist = torch.cdist(here, coords, compute_mode="donot_use_mm_for_euclid_dist")
    if dec.dist_bias:
        score = score - dec.glimpse_alpha.view(1, h, 1, 1) * math.log2(n) * dist[:, None]
    score = score.masked_fill(~mask[:, None], float("-inf"))
    g = (score.softmax(-1) @ heads(gv)).transpose(1, 2).reshape(b, s, d)
    g = dec.out(g)
    if dec.residual_ffn:
        g = g + q
        g = g + dec.ffn(g)
    u = g @ lk.transpose(1, 2) / math.sqrt(d)
    if dec.dist_bias:
        u = u - dec.pointer_alpha * math.log2(n) * dist
    return dec.tanh_clip * torch.tanh(u)


@pytest.mark.parametrize("preset", ("pomo-dist", "pomo"))
def test_decoder_matches_the_papers_formulas(preset):
    """Cache + fold (old presets) or no fold + ReLD + ICAM (new preset) = the plain formulas."""
    pol = tiny(preset, "cvrp").eval()
    set_alphas(pol, 0.7)
    _, env, td = instances("cvrp", n=10, b=2)
    with torch.no_grad():
        cache, current, first, state, mask = first_step(pol, td, env, 5)
        got, _ = pol.decoder(cache, current, first, state, mask)
        ref = reference_logits(pol, cache.node_emb, td["locs"], current, state, mask)
    c = pol.decoder.tanh_clip
    assert torch.allclose(got - c, ref, atol=1e-5)


def test_encoder_attention_matches_the_plain_formula():
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, dist_bias=True)
    with torch.no_grad():
        attn.dist_alpha.copy_(torch.tensor([0.5, 1.0, 2.0, -0.3]))
    x, coords = torch.randn(2, 9, 32), torch.rand(2, 9, 2)
    with torch.no_grad():
        assert torch.allclose(attn(x, coords), reference_attention(attn, x, coords), atol=1e-5)
    assert size_scale(9) == math.log2(9)
    with pytest.raises(ValueError):
        attn(x)


def test_bias_changes_logits_and_gradient_reaches_alpha():
    pol = tiny("pomo-dist", "cvrp")
    _, env, td = instances("cvrp", n=10, b=2)
    with torch.no_grad():
        base = first_step(pol, td, env, 4)
        with_bias, _ = pol.decoder(*base)
        set_alphas(pol, 0.0)
        cache0 = _encode(pol.parts, td, 1)[0]
        no_bias, _ = pol.decoder(cache0, *base[1:])
    assert (with_bias - no_bias).abs().max() > 1e-3
    # alpha = 0 is exactly the unbiased model with the same weights
    plain = build_policy(pol.config.replace(attn_dist_bias=False), "cvrp")
    missing, unexpected = plain.load_state_dict(pol.state_dict(), strict=False)
    assert not missing and all(k.endswith("_alpha") for k in unexpected)
    with torch.no_grad():
        cache_p = _encode(plain.parts, td, 1)[0]
        got, _ = plain.decoder(cache_p, *base[1:])
    assert torch.allclose(got, no_bias, atol=1e-5)
    # gradients of a REINFORCE loss reach every alpha
    set_alphas(pol, 1.0)
    pol.train()
    out = pol(td, env, "multistart_sampling", select_best=False, seed=0)
    adv = out.reward - out.reward.mean(1, keepdim=True)
    (-(adv * out.log_likelihood).mean()).backward()
    alphas = {n: p_ for n, p_ in pol.named_parameters() if n.endswith("_alpha")}
    assert len(alphas) == TINY["num_layers"] + 2
    for name, prm in alphas.items():
        assert prm.grad is not None and prm.grad.abs().sum() > 0, name


def test_bias_is_invariant_under_augmentation():
    """The bias term is the same for every dihedral transform; and with the coordinate columns
    of the embedding zeroed, only the (distance) bias sees the geometry, so all 8 augmentations
    decode the same tours."""
    _, _, td = instances("cvrp", n=10, b=2)
    locs = td["locs"]
    ref = pairwise_distance(locs, locs)
    for k in range(8):
        moved = dihedral_locs(locs)[:, k]
        assert torch.allclose(pairwise_distance(moved, moved), ref, atol=1e-6)
    for problem in ("cvrp", "tsp"):
        pol = tiny("pomo-dist", problem).eval()
        with torch.no_grad():
            for lin in (pol.encoder.init_embedding.node, pol.encoder.init_embedding.depot):
                if lin is not None:
                    lin.weight[:, :2] = 0.0
        p, env, td = instances(problem, n=10, b=2)
        with torch.no_grad():
            # augmenting inside _encode: the bias uses the untransformed coordinates (exact)
            cache, _ = _encode(pol.parts, td, 8)
            coords = cache.coords.view(2, 8, -1, 2)
            assert torch.equal(coords, coords[:, :1].expand_as(coords))
            out = pol(td, env, "multistart_greedy", augment=8, num_starts=3)
        r = out.reward.view(2, 8, 3)
        assert torch.allclose(r, r[:, :1].expand_as(r), atol=1e-6), problem
        a = out.actions.view(2, 8, 3, -1)
        assert torch.equal(a, a[:, :1].expand_as(a)), problem


def test_chunked_attention_equals_unchunked(monkeypatch):
    pol = tiny("pomo-dist", "cvrp").eval()
    set_alphas(pol, 0.8)
    p, env, td = instances("cvrp", n=12, b=2)
    feats, coords = p.node_features(td), td["locs"]
    with torch.no_grad():
        full, _ = pol.encoder(feats, coords)
        base = first_step(pol, td, env, 6)
        full_logits, _ = pol.decoder(*base)
    # one query row per chunk, in the encoder and in the decoder's glimpse
    monkeypatch.setattr(encoder_mod, "ATTN_BIAS_CHUNK_BYTES", 1)
    assert bias_chunk_rows(2, 4, 13, 13) == 1
    with torch.no_grad():
        chunked, _ = pol.encoder(feats, coords)
        chunk_logits, _ = pol.decoder(*base)
    assert torch.allclose(full, chunked, atol=1e-5)
    assert torch.allclose(full_logits, chunk_logits, atol=1e-5)
    # the gradient through chunks too
    pol.train()
    out = pol(td, env, "multistart_sampling", select_best=False, seed=0)
    out.log_likelihood.sum().backward()
    assert pol.encoder.layers[0].attn.dist_alpha.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- old presets
@pytest.mark.parametrize("preset", OLD_PRESETS)
def test_old_presets_ignore_coordinates(preset):
    """Without the flags the encoder/decoder take their original path: passing coordinates
    changes nothing, bit for bit."""
    pol = tiny(preset, "cvrp").eval()
    p, env, td = instances("cvrp")
    feats = p.node_features(td)
    with torch.no_grad():
        a, _ = pol.encoder(feats)
        b, _ = pol.encoder(feats, td["locs"])
        assert torch.equal(a, b)
        cache = pol.decoder.precompute(a, td["locs"])
        assert cache.coords is None and cache.log_nodes == 0.0
        ref = pol.decoder.precompute(a)
        assert torch.equal(cache.logit_k, ref.logit_k)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    from nco.train import TrainConfig

    pol = tiny("pomo-dist", "cvrp").eval()
    set_alphas(pol, 0.9)  # not the init: the alphas must travel with the file
    tcfg = TrainConfig(problem="cvrp", size=10, preset="pomo-dist", policy=TINY)
    info = checkpoint_info(pol.config, tcfg)
    path = tmp_path / "pomo-dist.pt"
    torch.save(
        {
            "format": EXPORT_FORMAT,
            "format_version": 1,
            "info": info,
            "state_dict": pol.state_dict(),
        },
        path,
    )
    loaded, got_info = load_model(path, problem="cvrp")
    assert loaded.config == pol.config and got_info["preset"] == "pomo-dist"
    _, env, td = instances("cvrp")
    with torch.no_grad():
        a = pol(td, env, "multistart_greedy", augment=8)
        b = loaded(td, env, "multistart_greedy", augment=8)
        base = first_step(pol, td, env, 4)
        la, _ = pol.decoder(*base)
        lb, _ = loaded.decoder(_encode(loaded.parts, td, 1)[0], *base[1:])
    assert torch.equal(la, lb)
    assert torch.equal(a.actions, b.actions) and torch.equal(a.log_likelihood, b.log_likelihood)


def test_nco_train_runs_the_preset_and_its_checkpoint_loads(tmp_path):
    """A few seconds of ``nco train --preset pomo-dist`` (mtvrp: depot, time windows) writes a
    self-describing Lightning checkpoint that load_model rebuilds with the trained alphas."""
    from tests.conftest import train_tiny_mtvrp

    run = train_tiny_mtvrp(tmp_path / "run", "pomo-dist", size=6)
    policy, info = load_model(run, problem="mtvrp")
    assert info["preset"] == "pomo-dist" and info["policy"]["attn_dist_bias"] is True
    assert policy.config.decoder_residual_ffn and policy.decoder.pointer_alpha is not None
    p, env, td = instances("mtvrp", n=6, b=2)
    with torch.no_grad():
        out = policy(td, env, "multistart_greedy", augment=8)
    m = out.actions.shape[1]
    assert all(not v for v in p.check(expand_rows(td, m), out.actions.flatten(0, 1)))


# ----------------------------------------------------------------------------- devices
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available on this machine")
@pytest.mark.parametrize("problem", ("cvrp", "tsp"))
def test_cuda_matches_cpu(problem, monkeypatch):
    pol = tiny("pomo-dist", problem).eval()
    p, env, td = instances(problem)
    with torch.no_grad():
        cpu = pol(td, env, "multistart_greedy", augment=8)
        pol_c = pol.to("cuda")
        env_c = p.make_env(num_loc=10, device="cuda")
        gpu = pol_c(td.to("cuda"), env_c, "multistart_greedy", augment=8)
        monkeypatch.setattr(encoder_mod, "ATTN_BIAS_CHUNK_BYTES", 1)
        chunked = pol_c(td.to("cuda"), env_c, "multistart_greedy", augment=8)
    assert gpu.reward.device.type == "cuda"
    assert torch.allclose(cpu.best_reward, gpu.best_reward.cpu(), atol=1e-4)
    assert torch.allclose(gpu.log_likelihood, chunked.log_likelihood, atol=1e-4)
    pol_c.train()
    out = pol_c(td.to("cuda"), env_c, "multistart_sampling", select_best=False, seed=0)
    out.log_likelihood.sum().backward()
    assert pol_c.decoder.glimpse_alpha.grad.abs().sum() > 0
