"""Fused masked sampling for the decoder hot path.

Every decoding step of a constructive policy turns a row of logits over the nodes into one action:
mask infeasible nodes, divide by a temperature, optionally restrict to the top-k / nucleus (top-p)
set, renormalise, then take the argmax or draw a sample. This module provides

* :func:`sample_torch`: the plain-torch reference (device-agnostic, used on CUDA);
* :func:`sample_numba`: a fused numba kernel over ``[R, N]`` float32 rows (used on CPU);
* :func:`masked_sample`: the one dispatch function callers use;
* :func:`masked_log_softmax`: the differentiable log-probabilities used by training.

Semantics shared by both implementations
----------------------------------------
For one row with scaled logits ``x = logits / temperature`` and feasible set ``F = mask``:

1. Candidates are ranked by ``x`` descending, ties broken by the lower node index.
2. Top-k (``top_k > 0``) keeps the first ``top_k`` feasible candidates in that ranking.
3. Top-p (``top_p < 1``) keeps the shortest prefix of the ranking whose probability mass under the
   softmax restricted to the top-k set reaches ``top_p``; the best candidate is always kept.
4. The final distribution is the softmax of ``x`` restricted to the kept set.
5. Greedy picks the best candidate (argmax of ``x`` over ``F``, ties to the lowest index); sampling
   draws from the final distribution. ``log_prob`` is the log-probability of the chosen action
   under the final (filtered, renormalised) distribution.

Logits of feasible actions must be finite or ``-inf`` (at least one finite per row); NaN logits
on feasible actions are not supported. Values at infeasible positions are ignored (they may be
``-inf`` or NaN).

Gradients: the ``log_prob`` returned by the sampling functions never carries gradient (the numba
kernel cannot, and the reference is detached for parity). Callers that need differentiable
log-likelihoods recompute ``masked_log_softmax(logits, mask, temperature)`` in torch and gather it
at the returned actions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from nco.kernels.threads import kernel_threads

__all__ = [
    "masked_log_softmax",
    "masked_sample",
    "sample_numba",
    "sample_torch",
]

# ----------------------------------------------------------------------------------------------
# Argument validation (shared by both paths so that they reject exactly the same inputs)
# ----------------------------------------------------------------------------------------------


def _check_params(temperature: float, top_k: int, top_p: float) -> None:
    if not (
        isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {top_k!r}")
    if not (isinstance(top_p, int | float) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must satisfy 0 < top_p <= 1 (1 disables it), got {top_p!r}")


def _check_inputs(logits: torch.Tensor, mask: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise ValueError("logits and mask must be torch tensors")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = feasible), got {mask.dtype}")
    if logits.shape != mask.shape:
        raise ValueError(
            f"logits and mask must have the same shape, got {tuple(logits.shape)} "
            f"and {tuple(mask.shape)}"
        )
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ValueError(
            f"logits need a non-empty last (node) dimension, got {tuple(logits.shape)}"
        )
    if logits.device != mask.device:
        raise ValueError(f"logits ({logits.device}) and mask ({mask.device}) on different devices")


def _empty_rows_error(n_bad: int, n_rows: int) -> ValueError:
    return ValueError(
        f"{n_bad} of {n_rows} rows have no feasible action (mask is all False); "
        "every row needs at least one True"
    )


# ----------------------------------------------------------------------------------------------
# Torch reference
# ----------------------------------------------------------------------------------------------


def masked_log_softmax(
    logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Differentiable log-softmax of ``logits / temperature`` over feasible actions.

    Parameters
    ----------
    logits : Tensor, float, shape [..., N]
        Unnormalised scores (any leading shape, e.g. [B, S, N]).
    mask : Tensor, bool, shape [..., N]
        True where the action is feasible.
    temperature : float, default 1.0
        Softmax temperature, > 0.

    Returns
    -------
    Tensor, same dtype as ``logits``, shape [..., N]
        Log-probabilities; ``-inf`` at infeasible actions. Rows without any feasible action are
        NaN (the sampling functions reject them). Gradients flow to ``logits``.
    """
    _check_params(temperature, 0, 1.0)
    _check_inputs(logits, mask)
    x = logits * (1.0 / temperature) if temperature != 1.0 else logits
    return torch.log_softmax(x.masked_fill(~mask, float("-inf")), dim=-1)


def _filtered_log_probs(
    x: torch.Tensor, mask: torch.Tensor, top_k: int, top_p: float
) -> torch.Tensor:
    """Log-probabilities of the final distribution for masked scaled logits ``x`` [R, N]."""
    keep = mask
    if top_k > 0 or top_p < 1.0:
        n = x.shape[-1]
        # Stable descending sort ranks ties by the lower index, matching the kernel's total order.
        sx, order = torch.sort(x, dim=-1, descending=True, stable=True)
        skeep = mask.gather(-1, order)
        if 0 < top_k < n:
            skeep = skeep & (torch.arange(n, device=x.device) < top_k)
        if top_p < 1.0:
            sp = torch.softmax(sx.masked_fill(~skeep, float("-inf")), dim=-1)
            cum = torch.cumsum(sp, dim=-1)
            # Exclusive prefix mass: keeping "mass before me < p" yields the shortest prefix that
            # reaches p and always keeps rank 0 (its exclusive mass is exactly 0).
            cum_excl = torch.cat([torch.zeros_like(cum[:, :1]), cum[:, :-1]], dim=-1)
            skeep = skeep & (cum_excl < top_p)
        keep = torch.zeros_like(mask).scatter(-1, order, skeep)
    return torch.log_softmax(x.masked_fill(~keep, float("-inf")), dim=-1)


def sample_torch(
    logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference masked sampling in plain torch (CPU or CUDA).

    Parameters
    ----------
    logits : Tensor, float, shape [..., N]
        Unnormalised scores, e.g. [B, S, N] (batch, POMO starts, nodes).
    mask : Tensor, bool, shape [..., N]
        True where the action is feasible; every row needs at least one True.
    temperature : float, default 1.0
        Softmax temperature, > 0.
    top_k : int, default 0
        Keep only the ``top_k`` best feasible actions; 0 disables the filter.
    top_p : float, default 1.0
        Nucleus threshold in (0, 1]; 1 disables the filter.
    greedy : bool, default False
        Take the best action (ties to the lowest index) instead of sampling.
    generator : torch.Generator, optional
        Source of randomness for sampling, on the device of ``logits``.

    Returns
    -------
    actions : Tensor, int64, shape [...]
        Chosen node per row.
    log_prob : Tensor, float32, shape [...]
        Log-probability of the chosen action under the final filtered, renormalised
        distribution; carries no gradient.

    Raises
    ------
    ValueError
        On invalid arguments or if some row has no feasible action.
    """
    _check_params(temperature, top_k, top_p)
    _check_inputs(logits, mask)
    lead, n = logits.shape[:-1], logits.shape[-1]
    with torch.no_grad():
        x = logits.detach().reshape(-1, n)
        m = mask.reshape(-1, n)
        r = x.shape[0]
        if r == 0:
            return (
                torch.empty(lead, dtype=torch.int64, device=logits.device),
                torch.empty(lead, dtype=torch.float32, device=logits.device),
            )
        n_bad = int((~m.any(dim=-1)).sum())
        if n_bad:
            raise _empty_rows_error(n_bad, r)
        if temperature != 1.0:
            # Multiply by the float32 reciprocal (not divide) so that CPU, CUDA and the numba
            # kernel round identically; greedy tie-breaking depends on exact equality.
            x = x * (1.0 / temperature)
        x = x.masked_fill(~m, float("-inf"))
        logp = _filtered_log_probs(x, m, top_k, top_p)
        if greedy:
            # argmax of the scaled logits, not of logp: subtracting the normaliser can merge
            # distinct values by rounding, which would change the tie-break.
            actions = torch.argmax(x, dim=-1)
        else:
            probs = logp.exp()
            cdf = torch.cumsum(probs, dim=-1)
            u = torch.rand((r, 1), generator=generator, device=x.device, dtype=cdf.dtype)
            actions = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)
            # u * total can round up to total; fall back to the last action with mass so that a
            # zero-probability (masked or filtered) action is never returned.
            idx = torch.arange(n, device=x.device)
            last_pos = torch.where(probs > 0, idx, -1).amax(dim=-1)
            actions = torch.minimum(actions, last_pos)
        log_prob = logp.gather(-1, actions[:, None]).squeeze(-1).float()
    return actions.reshape(lead), log_prob.reshape(lead)


# ----------------------------------------------------------------------------------------------
# Numba kernel
# ----------------------------------------------------------------------------------------------


def _i32_as_f32_typing(typingctx, v):  # pragma: no cover - compiled by numba
    """Reinterpret int32 bits as float32 (lets the exp below vectorise without a libm call)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


# numba's types give an intrinsic the typing function's signature (typingctx, v); jitted code
# calls it with v alone.
_i32_as_f32 = cast(Callable[[Any], Any], intrinsic(_i32_as_f32_typing))


_EXP_LO = np.float32(-87.0)  # below this exp underflows past float32's normal range


@njit(inline="always", cache=True)
def _exp_le0(d):
    """exp(d) for float32 d <= 0 (Cephes expf polynomial, ~1 ulp); 0 for d < -87 or -inf.

    numba has no vector math library here (no SVML), so ``math.exp`` would be a scalar libm
    call per element; this branch-free form lets LLVM vectorise the whole row loop.
    """
    dc = max(d, _EXP_LO)
    n = np.floor(dc * np.float32(1.44269504) + np.float32(0.5))
    g = dc - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * g + np.float32(1.3981999507e-3)
    p = p * g + np.float32(8.3334519073e-3)
    p = p * g + np.float32(4.1665795894e-2)
    p = p * g + np.float32(1.6666665459e-1)
    p = p * g + np.float32(5.0000001201e-1)
    p = p * g * g + g + np.float32(1.0)
    scale = _i32_as_f32((np.int32(n) + np.int32(127)) << np.int32(23))
    return p * scale if d >= _EXP_LO else np.float32(0.0)


def _f32_as_i32_typing(typingctx, v):  # pragma: no cover - compiled by numba
    """Reinterpret float32 bits as int32."""
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


_f32_as_i32 = cast(Callable[[Any], Any], intrinsic(_f32_as_i32_typing))  # see _i32_as_f32


@njit(inline="always", cache=True)
def _order_key(b):
    """Map float32 bits to an int32 whose signed order is the float order (an involution).

    LLVM will not vectorise a float max reduction without fast-math flags that would also let it
    assume away the -inf logits we must handle; an integer max reduction vectorises as is.
    """
    return b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF))


@njit(cache=True)
def _row_max_count(xr, mr):
    """Max of the feasible raw logits of one row and the number of feasible entries."""
    k = np.int32(-(2**31))
    cnt = np.int32(0)
    for i in range(xr.shape[0]):
        key = _order_key(_f32_as_i32(xr[i]))
        k = max(k, key if mr[i] else np.int32(-(2**31)))
        cnt += np.int32(mr[i])
    return _i32_as_f32(_order_key(k)), cnt


@njit(cache=True, fastmath={"reassoc", "nsz"})
def _row_exp_sum(xr, mr, inv_t, mx, er):
    """Fill ``er`` with exp(x - max) (0 where infeasible) and return the float32 sum."""
    s = np.float32(0.0)
    for i in range(xr.shape[0]):
        d = xr[i] * inv_t - mx if mr[i] else np.float32(-np.inf)
        e = _exp_le0(d)
        er[i] = e
        s += e
    return s


_SMALL_K = 32  # up to this k, bounded insertion beats heap pops (fewer unpredictable branches)


@njit(inline="always", cache=True)
def _before(xs, a, b):
    """Total order of the ranking: larger scaled logit first, then the lower index."""
    return xs[a] > xs[b] or (xs[a] == xs[b] and a < b)


@njit(cache=True)
def _sift_down(heap, start, size, xs):
    i = start
    while True:
        c = 2 * i + 1
        if c >= size:
            return
        if c + 1 < size and _before(xs, heap[c + 1], heap[c]):
            c += 1
        if _before(xs, heap[c], heap[i]):
            tmp = heap[i]
            heap[i] = heap[c]
            heap[c] = tmp
            i = c
        else:
            return


@njit(inline="always", cache=True)
def _mix64(z):
    """SplitMix64 finaliser: a bijective avalanche on uint64."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(inline="always", cache=True)
def _uniform(seed, counter, row):
    """Uniform in [0, 1) as a pure function of (seed, counter, row): order-free parallel RNG."""
    h = _mix64(seed + np.uint64(0x9E3779B97F4A7C15))
    h = _mix64(h ^ (counter * np.uint64(0xD1B54A32D192ED03)))
    h = _mix64(h + np.uint64(row) * np.uint64(0x9E3779B97F4A7C15))
    return np.float64(h >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _first_max(xr, mr, inv_t, mx):
    """Lowest feasible index whose scaled logit equals ``mx`` (argmax with torch's tie-break).

    Written as a min-reduction over the whole row instead of an early-exit search: a
    data-dependent break over randomly masked entries mispredicts, this vectorises.
    """
    n = xr.shape[0]
    a = n
    for i in range(n):
        hit = (xr[i] * inv_t == mx) & mr[i]
        a = min(a, i if hit else n)
    return a


@njit(inline="always", cache=True)
def _inverse_cdf(er, n, target):
    """First index whose running mass exceeds ``target``; zero-mass entries are never returned.

    The running sum is branch free (masked entries add 0); only the rarely taken exit branches.
    If rounding leaves the sequential total at or below ``target`` the last entry with mass wins.
    """
    cum = 0.0
    for i in range(n):
        cum += er[i]
        if cum > target:
            return i
    for i in range(n - 1, -1, -1):
        if er[i] > 0.0:
            return i
    return 0


@njit(cache=True)
def _sample_row(
    xr, mr, inv_t, top_k, top_p, greedy, seed, counter, row, er, xs, heap, kept
):  # pragma: no cover - exercised through _sample_rows
    n = xr.shape[0]
    raw_max, cnt = _row_max_count(xr, mr)
    # Scaling by inv_t > 0 is monotonic under rounding, so this is the max of the scaled logits.
    mx = raw_max * inv_t
    if cnt == 0:
        return -1, np.float32(np.nan)
    total = _row_exp_sum(xr, mr, inv_t, mx, er)
    filt_k = 0 < top_k < cnt
    filt_p = top_p < 1.0
    if not (filt_k or filt_p):
        # Common case: no ranking needed. Two vectorised passes (max, exp-sum) above, plus an
        # third one: a vectorised first-maximum search or an early-exit inverse-CDF scan.
        if greedy:
            return _first_max(xr, mr, inv_t, mx), np.float32(-math.log(total))
        a = _inverse_cdf(er, n, _uniform(seed, counter, row) * np.float64(total))
        return a, np.float32((np.float64(xr[a] * inv_t) - mx) - math.log(total))

    # Ranked path. Candidates come out best-first into `kept`: for a small k by bounded
    # insertion (one predictable compare per entry, few insertions), otherwise from a max-heap
    # (O(N + k log N)); top-p without top-k pops the heap lazily, only until the nucleus mass
    # is reached, so no full sort is ever done.
    for i in range(n):
        xs[i] = xr[i] * inv_t
    limit = top_k if filt_k else cnt
    n_kept = 0
    size = 0
    # Mass of the top-k set normalises the nucleus threshold (top-p acts on the top-k softmax).
    z_k = np.float64(total)
    if filt_k and top_k <= _SMALL_K:
        for i in range(n):
            if not mr[i]:
                continue
            v = xs[i]
            if n_kept == top_k:
                # Equal values keep the earlier (lower) index, so only strictly better enters.
                if not (v > xs[kept[top_k - 1]]):
                    continue
                j = top_k - 1
            else:
                j = n_kept
                n_kept += 1
            while j > 0 and xs[kept[j - 1]] < v:
                kept[j] = kept[j - 1]
                j -= 1
            kept[j] = i
    else:
        for i in range(n):
            if mr[i]:
                heap[size] = i
                size += 1
        for s in range(size // 2 - 1, -1, -1):
            _sift_down(heap, s, size, xs)
        if filt_k:
            while n_kept < limit:
                kept[n_kept] = heap[0]
                n_kept += 1
                size -= 1
                heap[0] = heap[size]
                _sift_down(heap, 0, size, xs)
    if filt_k:
        z_k = np.float64(0.0)
        for j in range(n_kept):
            z_k += er[kept[j]]
    if filt_p:
        thr = top_p * z_k
        cum = 0.0
        j = 0
        while True:
            if j == n_kept:
                # Top-k off: draw the next candidate from the heap lazily.
                kept[n_kept] = heap[0]
                n_kept += 1
                size -= 1
                heap[0] = heap[size]
                _sift_down(heap, 0, size, xs)
            cum += er[kept[j]]
            j += 1
            if not (cum < thr) or j == limit:
                break
        n_kept = j
    z_f = 0.0
    for j in range(n_kept):
        z_f += er[kept[j]]
    a = kept[0]
    if not greedy:
        target = _uniform(seed, counter, row) * z_f
        cum = 0.0
        for j in range(n_kept):
            e = er[kept[j]]
            if e > 0.0:
                a = kept[j]
                cum += e
                if cum > target:
                    break
    return a, np.float32((np.float64(xs[a]) - mx) - math.log(z_f))


@njit(cache=True, parallel=True)
def _sample_rows(
    logits, mask, inv_t, top_k, top_p, greedy, seed, counter, actions, log_prob
):  # pragma: no cover - compiled by numba
    """Fused masked sampling over rows of float32 ``logits`` [R, N] and bool ``mask`` [R, N].

    Writes ``actions`` [R] (int64, -1 for rows without a feasible action) and ``log_prob`` [R].
    Rows are independent and the RNG is counter based, so the result does not depend on how
    ``prange`` splits the rows over threads.
    """
    r_total, n = logits.shape
    # Chunks amortise the scratch allocations; their number is fixed by R (not the thread count)
    # and each row's result depends only on the row itself anyway.
    chunk = 64
    n_chunks = (r_total + chunk - 1) // chunk
    for c in prange(n_chunks):
        er = np.empty(n, dtype=np.float32)
        xs = np.empty(n, dtype=np.float32)
        heap = np.empty(n, dtype=np.int64)
        kept = np.empty(n, dtype=np.int64)
        lo = c * chunk
        hi = min(lo + chunk, r_total)
        for r in range(lo, hi):
            a, lp = _sample_row(
                logits[r],
                mask[r],
                inv_t,
                top_k,
                top_p,
                greedy,
                seed,
                counter,
                r,
                er,
                xs,
                heap,
                kept,
            )
            actions[r] = a
            log_prob[r] = lp


def _as_numpy_rows(logits: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    n = logits.shape[-1]
    # reshape/contiguous are views for the usual contiguous float32 input, so no copy is made.
    x = logits.detach().reshape(-1, n)
    if x.dtype != torch.float32:
        x = x.float()
    x = x.contiguous()
    m = mask.reshape(-1, n).contiguous()
    return x.numpy(), m.numpy()


_U64 = (1 << 64) - 1


def sample_numba(
    logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    seed: int = 0,
    counter: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused masked sampling with the numba kernel (CPU tensors only).

    Same semantics as :func:`sample_torch`; the randomness comes from a counter-based generator:
    the uniform used by row ``r`` is a pure function of ``(seed, counter, r)``, so results are
    reproducible and independent of the thread count. Use a new ``counter`` per decoding step
    (e.g. the step index) and a new ``seed`` per rollout.

    Parameters
    ----------
    logits : Tensor, float (computed in float32), shape [..., N], CPU
        Unnormalised scores, e.g. [B, S, N] (batch, POMO starts, nodes). Detached; read in place
        when contiguous float32.
    mask : Tensor, bool, shape [..., N], CPU
        True where the action is feasible; every row needs at least one True.
    temperature, top_k, top_p, greedy
        As in :func:`sample_torch`.
    seed : int, default 0
        Random stream; taken modulo 2**64.
    counter : int, default 0
        Call index within the stream; taken modulo 2**64.

    Returns
    -------
    actions : Tensor, int64, shape [...]
        Chosen node per row (flattened rows are ``R = prod(...)``).
    log_prob : Tensor, float32, shape [...]
        Log-probability of the chosen action under the final distribution; no gradient.

    Raises
    ------
    ValueError
        On invalid arguments, non-CPU tensors, or rows without a feasible action.
    """
    _check_params(temperature, top_k, top_p)
    _check_inputs(logits, mask)
    if logits.device.type != "cpu":
        raise ValueError(f"sample_numba needs CPU tensors, got {logits.device}")
    lead = logits.shape[:-1]
    x, m = _as_numpy_rows(logits, mask)
    r = x.shape[0]
    actions = np.empty(r, dtype=np.int64)
    log_prob = np.empty(r, dtype=np.float32)
    if r:
        kernel_threads(x.size)
        _sample_rows(
            x,
            m,
            np.float32(1.0 / temperature),
            np.int64(top_k),
            np.float64(top_p),
            bool(greedy),
            np.uint64(int(seed) & _U64),
            np.uint64(int(counter) & _U64),
            actions,
            log_prob,
        )
        n_bad = int(np.count_nonzero(actions < 0))
        if n_bad:
            raise _empty_rows_error(n_bad, r)
    return torch.from_numpy(actions).reshape(lead), torch.from_numpy(log_prob).reshape(lead)


def masked_sample(
    logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    seed: int = 0,
    counter: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one action per row: the single entry point of the decoder hot path.

    Dispatch: CPU tensors go to the fused numba kernel (:func:`sample_numba`, randomness from
    ``seed``/``counter``; ``generator`` is ignored); other devices (CUDA) go to the torch
    reference (:func:`sample_torch`, randomness from ``generator``; ``seed``/``counter`` are
    ignored). Both paths implement the same distribution, not the same random stream.

    The returned ``log_prob`` never carries gradient. For REINFORCE-style training recompute
    ``masked_log_softmax(logits, mask, temperature).gather(-1, actions[..., None])`` in torch.

    Parameters
    ----------
    logits : Tensor, float, shape [..., N]
        Unnormalised scores, e.g. [B, S, N] (batch, POMO starts, nodes).
    mask : Tensor, bool, shape [..., N]
        True where the action is feasible; every row needs at least one True.
    temperature : float, default 1.0
        Softmax temperature, > 0.
    top_k : int, default 0
        Keep only the ``top_k`` best feasible actions; 0 disables the filter.
    top_p : float, default 1.0
        Nucleus threshold in (0, 1]; 1 disables the filter.
    greedy : bool, default False
        Take the best action (ties to the lowest index) instead of sampling.
    seed, counter : int, default 0
        Counter-based random stream of the CPU kernel.
    generator : torch.Generator, optional
        Random source of the torch path (non-CPU devices).

    Returns
    -------
    actions : Tensor, int64, shape [...]
        Chosen node per row, on the device of ``logits``.
    log_prob : Tensor, float32, shape [...]
        Log-probability of the chosen action under the final filtered, renormalised
        distribution; no gradient.

    Raises
    ------
    ValueError
        On invalid arguments or rows without a feasible action.
    """
    _check_inputs(logits, mask)
    if logits.device.type == "cpu":
        return sample_numba(
            logits,
            mask,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            greedy=greedy,
            seed=seed,
            counter=counter,
        )
    return sample_torch(
        logits,
        mask,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        generator=generator,
    )
