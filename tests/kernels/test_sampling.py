"""Tests for nco.kernels.sampling: the numba kernel against the torch reference."""

from __future__ import annotations

import math

import numba
import pytest
import torch
from scipy.stats import chisquare

from nco.kernels import sampling
from nco.kernels.sampling import (
    masked_log_softmax,
    masked_sample,
    sample_numba,
    sample_torch,
)

P_MIN = 1e-4  # chi-square p-value threshold: fixed seeds, so a pass is deterministic
FILTERS = [
    {},
    {"temperature": 0.5},
    {"temperature": 2.3},
    {"top_k": 1},
    {"top_k": 3},
    {"top_p": 0.5},
    {"top_p": 0.9},
    {"top_k": 4, "top_p": 0.7, "temperature": 0.8},
]


def _reference_probs(logits: torch.Tensor, mask: torch.Tensor, **kw) -> torch.Tensor:
    """Final (filtered, renormalised) distribution of the torch reference, float64 [R, N]."""
    n = logits.shape[-1]
    x = logits.reshape(-1, n) * (1.0 / kw.get("temperature", 1.0))
    m = mask.reshape(-1, n)
    x = x.masked_fill(~m, float("-inf"))
    logp = sampling._filtered_log_probs(x, m, kw.get("top_k", 0), kw.get("top_p", 1.0))
    return logp.double().exp()


def _random_case(seed: int, shape=(6, 7, 23)) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits with ties, -large values and NaN/-inf at masked entries; masks with singletons."""
    g = torch.Generator().manual_seed(seed)
    b, s, n = shape
    logits = torch.randn(shape, generator=g) * 2.0
    # Integer-valued rows create many exact ties.
    ties = torch.randint(-2, 3, shape, generator=g).float()
    logits = torch.where(torch.rand(b, s, 1, generator=g) < 0.3, ties, logits)
    # Rows living far in the negative range, and single very negative entries.
    logits[0] -= 1e4
    logits[1, :, ::5] = -1e4
    mask = torch.rand(shape, generator=g) < 0.5
    # Rows with exactly one feasible action.
    single = torch.randint(0, n, (b, s), generator=g)
    only_one = torch.rand(b, s, generator=g) < 0.2
    mask = torch.where(only_one[..., None], torch.nn.functional.one_hot(single, n).bool(), mask)
    mask[..., 0] |= ~mask.any(-1)
    # Infeasible entries may hold garbage; both paths must ignore it.
    logits = logits.masked_fill(~mask & (torch.rand(shape, generator=g) < 0.3), float("nan"))
    logits = logits.masked_fill(~mask & (torch.rand(shape, generator=g) < 0.3), float("-inf"))
    return logits, mask


# ----------------------------------------------------------------------------------------------
# Greedy equivalence and log-probabilities
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", FILTERS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_matches_reference(kw, seed):
    logits, mask = _random_case(seed)
    a_nb, lp_nb = sample_numba(logits, mask, greedy=True, **kw)
    a_pt, lp_pt = sample_torch(logits, mask, greedy=True, **kw)
    assert a_nb.dtype == torch.int64 and lp_nb.dtype == torch.float32
    assert a_nb.shape == logits.shape[:-1] and lp_nb.shape == logits.shape[:-1]
    assert torch.equal(a_nb, a_pt)
    torch.testing.assert_close(lp_nb, lp_pt, atol=1e-5, rtol=0)
    assert mask.gather(-1, a_nb[..., None]).all()


@pytest.mark.parametrize("top_k", [sampling._SMALL_K, sampling._SMALL_K + 1, 60])
def test_top_k_both_selection_paths_match_reference(top_k):
    # k <= _SMALL_K uses bounded insertion, larger k the heap: both must rank identically.
    logits, mask = _random_case(5, shape=(16, 8, 101))
    for greedy in (True, False):
        for kw in ({"top_k": top_k}, {"top_k": top_k, "top_p": 0.8}):
            a_nb, lp_nb = sample_numba(logits, mask, greedy=greedy, seed=3, **kw)
            probs = _reference_probs(logits, mask, **kw).reshape(*mask.shape)
            expected = probs.gather(-1, a_nb[..., None]).squeeze(-1).log().float()
            torch.testing.assert_close(lp_nb, expected, atol=1e-5, rtol=1e-6)
            if greedy:
                assert torch.equal(a_nb, sample_torch(logits, mask, greedy=True, **kw)[0])


def test_greedy_ties_pick_lowest_index():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0], [2.0, 2.0, 2.0, 2.0], [0.0, 5.0, 5.0, 1.0]])
    mask = torch.tensor([[True, False, True, True], [True] * 4, [True, True, True, False]])
    for fn in (sample_numba, sample_torch):
        for kw in ({}, {"top_k": 2}, {"top_p": 0.3}, {"temperature": 0.3}):
            actions, _ = fn(logits, mask, greedy=True, **kw)
            assert actions.tolist() == [2, 0, 1], (fn.__name__, kw)


@pytest.mark.parametrize("kw", FILTERS)
def test_sampled_log_prob_matches_reference_distribution(kw):
    logits, mask = _random_case(3)
    actions, log_prob = sample_numba(logits, mask, seed=5, counter=2, **kw)
    ref = _reference_probs(logits, mask, **kw).log().float()
    expected = ref.gather(-1, actions.reshape(-1, 1)).reshape(actions.shape)
    assert torch.isfinite(expected).all(), "sampled an action outside the filtered support"
    torch.testing.assert_close(log_prob, expected, atol=1e-5, rtol=1e-6)


def test_single_feasible_action_has_log_prob_zero():
    logits = torch.randn(50, 9)
    mask = torch.zeros(50, 9, dtype=torch.bool)
    mask[torch.arange(50), torch.arange(50) % 9] = True
    for fn in (sample_numba, sample_torch):
        for greedy in (True, False):
            actions, log_prob = fn(logits, mask, greedy=greedy, top_p=0.3)
            assert torch.equal(actions, torch.arange(50) % 9)
            assert torch.all(log_prob == 0)


def test_masked_log_softmax_is_differentiable_and_consistent():
    logits, mask = _random_case(4)
    logits = torch.nan_to_num(logits, nan=0.0).requires_grad_(True)
    logp = masked_log_softmax(logits, mask, temperature=0.7)
    assert torch.all(logp[~mask] == float("-inf"))
    actions, log_prob = masked_sample(logits, mask, temperature=0.7, seed=1)
    assert not log_prob.requires_grad
    picked = logp.gather(-1, actions[..., None]).squeeze(-1)
    torch.testing.assert_close(picked.detach(), log_prob, atol=1e-5, rtol=1e-6)
    picked.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[~mask] == 0)


# ----------------------------------------------------------------------------------------------
# Sampled frequencies (chi-square goodness of fit)
# ----------------------------------------------------------------------------------------------

CHI_ROW = torch.tensor([0.3, -0.2, 1.1, 0.0, 2.0, -1.0, 0.7, 9.0, 0.5, 1.4, -0.6, 1.0])
CHI_MASK = torch.tensor([1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1], dtype=torch.bool)


def _assert_fits(actions: torch.Tensor, probs: torch.Tensor) -> None:
    n = probs.shape[-1]
    counts = torch.bincount(actions.reshape(-1), minlength=n).double()
    support = probs > 0
    assert counts[~support].sum() == 0, f"filtered-out actions were sampled: {counts.tolist()}"
    expected = probs[support] / probs[support].sum() * counts.sum()
    assert expected.min() >= 5, "test design: expected counts too small for chi-square"
    p_value = chisquare(counts[support].numpy(), expected.numpy()).pvalue
    assert p_value > P_MIN, f"p={p_value:.2e} counts={counts.tolist()} expected={expected}"


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"temperature": 0.6},
        {"temperature": 3.0},
        {"top_k": 4},
        {"top_p": 0.8},
        {"top_k": 6, "top_p": 0.9, "temperature": 1.5},
    ],
)
def test_numba_frequencies_one_row_repeated(kw):
    draws = 100_000
    logits = CHI_ROW.expand(draws, -1).contiguous()
    mask = CHI_MASK.expand(draws, -1).contiguous()
    actions, _ = sample_numba(logits, mask, seed=11, counter=3, **kw)
    probs = _reference_probs(CHI_ROW[None], CHI_MASK[None], **kw)[0]
    if "top_k" in kw:
        assert int((probs > 0).sum()) <= kw["top_k"]
    if "top_p" in kw:
        assert int((probs > 0).sum()) < int(CHI_MASK.sum())
    _assert_fits(actions, probs)


def test_numba_frequencies_across_counters():
    # Same rows, many calls: the stream must also be uniform along the counter axis.
    rows, calls = 1_000, 100
    logits = CHI_ROW.expand(rows, -1).contiguous()
    mask = CHI_MASK.expand(rows, -1).contiguous()
    actions = torch.stack(
        [sample_numba(logits, mask, seed=7, counter=c, top_p=0.95)[0] for c in range(calls)]
    )
    probs = _reference_probs(CHI_ROW[None], CHI_MASK[None], top_p=0.95)[0]
    _assert_fits(actions, probs)
    # Row 0 across counters alone (100 draws) must not be constant.
    assert actions[:, 0].unique().numel() > 1


@pytest.mark.parametrize("kw", [{}, {"temperature": 0.6, "top_k": 5}, {"top_p": 0.8}])
def test_torch_reference_frequencies(kw):
    draws = 100_000
    logits = CHI_ROW.expand(draws, -1)
    mask = CHI_MASK.expand(draws, -1)
    g = torch.Generator().manual_seed(0)
    actions, _ = sample_torch(logits, mask, generator=g, **kw)
    _assert_fits(actions, _reference_probs(CHI_ROW[None], CHI_MASK[None], **kw)[0])


def test_filtered_and_masked_actions_never_sampled():
    logits, mask = _random_case(8, shape=(64, 16, 31))
    for kw in FILTERS:
        probs = _reference_probs(logits, mask, **kw).reshape(*mask.shape)
        for counter in range(5):
            actions, _ = masked_sample(logits, mask, seed=3, counter=counter, **kw)
            assert (probs.gather(-1, actions[..., None]) > 0).all(), kw
            assert mask.gather(-1, actions[..., None]).all(), kw


# ----------------------------------------------------------------------------------------------
# Reproducibility of the counter-based stream
# ----------------------------------------------------------------------------------------------


def test_reproducible_and_counter_sensitive():
    logits, mask = _random_case(9, shape=(32, 16, 41))
    a1, l1 = sample_numba(logits, mask, seed=123, counter=4)
    a2, l2 = sample_numba(logits, mask, seed=123, counter=4)
    assert torch.equal(a1, a2) and torch.equal(l1, l2)
    a3, _ = sample_numba(logits, mask, seed=123, counter=5)
    a4, _ = sample_numba(logits, mask, seed=124, counter=4)
    multi = mask.sum(-1) > 1
    assert (a1 != a3)[multi].float().mean() > 0.3
    assert (a1 != a4)[multi].float().mean() > 0.3
    # Huge or negative seeds are taken modulo 2**64 rather than overflowing.
    a5, _ = sample_numba(logits, mask, seed=-1, counter=2**70)
    a6, _ = sample_numba(logits, mask, seed=2**64 - 1, counter=0)
    assert torch.equal(a5, a6)


def test_result_independent_of_thread_count():
    logits, mask = _random_case(10, shape=(64, 20, 33))
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a1, l1 = sample_numba(logits, mask, seed=1, counter=9, top_p=0.9)
        numba.set_num_threads(max(1, numba.config.NUMBA_NUM_THREADS))
        a2, l2 = sample_numba(logits, mask, seed=1, counter=9, top_p=0.9)
    finally:
        numba.set_num_threads(saved)
    assert torch.equal(a1, a2) and torch.equal(l1, l2)


def test_input_layout_and_dtype_do_not_matter():
    logits, mask = _random_case(11, shape=(9, 14, 17))
    logits = torch.nan_to_num(logits, nan=0.0, neginf=-50.0)
    ref = sample_numba(logits, mask, seed=2, counter=1)
    strided = logits.transpose(0, 1).contiguous().transpose(0, 1)
    assert not strided.is_contiguous()
    out = sample_numba(strided, mask, seed=2, counter=1)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    out64 = sample_numba(logits.double(), mask, seed=2, counter=1)
    assert torch.equal(out64[0], ref[0])


def test_any_leading_shape_and_empty_batch():
    logits = torch.randn(2, 3, 4, 5)
    mask = torch.ones(2, 3, 4, 5, dtype=torch.bool)
    for fn in (sample_numba, sample_torch):
        actions, log_prob = fn(logits, mask)
        assert actions.shape == (2, 3, 4) and log_prob.shape == (2, 3, 4)
        actions, log_prob = fn(torch.empty(0, 3, 5), torch.ones(0, 3, 5, dtype=torch.bool))
        assert actions.shape == (0, 3) and log_prob.shape == (0, 3)


# ----------------------------------------------------------------------------------------------
# Argument validation and dispatch
# ----------------------------------------------------------------------------------------------

SAMPLERS = [sample_numba, sample_torch, masked_sample]


@pytest.mark.parametrize("fn", SAMPLERS)
@pytest.mark.parametrize(
    "kw, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.1}, "top_p"),
    ],
)
def test_bad_arguments_raise(fn, kw, match):
    logits, mask = torch.randn(3, 5), torch.ones(3, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match=match):
        fn(logits, mask, **kw)


@pytest.mark.parametrize("fn", SAMPLERS)
def test_rows_without_feasible_action_raise(fn):
    logits, mask = torch.randn(4, 3, 6), torch.ones(4, 3, 6, dtype=torch.bool)
    mask[1, 2] = False
    mask[3, 0] = False
    with pytest.raises(ValueError, match="2 of 12 rows have no feasible action"):
        fn(logits, mask)


@pytest.mark.parametrize("fn", SAMPLERS)
def test_bad_inputs_raise(fn):
    logits = torch.randn(3, 5)
    with pytest.raises(ValueError, match="bool"):
        fn(logits, torch.ones(3, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="same shape"):
        fn(logits, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="floating"):
        fn(torch.ones(3, 5, dtype=torch.int64), torch.ones(3, 5, dtype=torch.bool))


def test_masked_log_softmax_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        masked_log_softmax(torch.randn(2, 3), torch.ones(2, 3, dtype=torch.bool), 0.0)


def test_dispatch_uses_numba_on_cpu(monkeypatch):
    calls = []
    real = sampling.sample_numba

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("torch reference used for CPU tensors")

    monkeypatch.setattr(sampling, "sample_numba", spy)
    monkeypatch.setattr(sampling, "sample_torch", forbidden)
    logits, mask = _random_case(12)
    actions, _ = sampling.masked_sample(logits, mask, top_k=3, seed=4, counter=6)
    assert len(calls) == 1 and calls[0]["seed"] == 4 and calls[0]["counter"] == 6
    assert torch.equal(actions, real(logits, mask, top_k=3, seed=4, counter=6)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available on this machine")
def test_dispatch_uses_torch_on_cuda():
    logits, mask = _random_case(13)
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    for kw in FILTERS:
        a_gpu, lp_gpu = masked_sample(logits.to(dev), mask.to(dev), greedy=True, **kw)
        a_cpu, lp_cpu = masked_sample(logits, mask, greedy=True, **kw)
        assert a_gpu.device.type == "cuda"
        assert torch.equal(a_gpu.cpu(), a_cpu)
        torch.testing.assert_close(lp_gpu.cpu(), lp_cpu, atol=1e-5, rtol=0)
        a_s, _ = masked_sample(logits.to(dev), mask.to(dev), generator=g, **kw)
        probs = _reference_probs(logits, mask, **kw).reshape(*mask.shape)
        assert (probs.gather(-1, a_s.cpu()[..., None]) > 0).all()
