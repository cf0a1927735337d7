"""The engines' inner loop: ticks of continuous batching over plain arrays (see fleet.py for the model).

Written as plain loops so that numba compiles it when it is installed (``pip install
'tokenfactory[sim]'``: ~100x faster, what the benchmark needs); without numba, or with
``TOKENFACTORY_SIM_JIT=0``, the same code runs as Python (identical results, slower). Every random
number is drawn by the caller (numpy's seeded Generator) and passed in, so both give the same
numbers.
"""

from __future__ import annotations

import os

import numpy as np

# engine float columns
SERVING_FROM, BASE, PER_SEQ, PER_TOK, BUDGET, KV_CAP, PF_FREE, KV_USED = range(8)
NEF = 8
# engine int columns
ACTIVE, FAC, POOL, MAX_SEQS, MAX_WAIT, HEAD, TAIL, NRUN = range(8)
NEI = 8
# counters
C_PROMPT, C_GEN, C_SUCCESS, C_DROPPED, C_PREEMPTED = range(5)
NCTR = 5
# request float fields (queue and running)
R_ARR, R_PROMPT, R_OUT, R_REM, R_FT = range(5)
NRF = 5
# request int fields
R_KEY, R_PEND = range(2)
NRI = 2
# arrival float fields (time, prompt, out, rem, u1, u2), int fields (factory, key, pend)
A_T, A_PROMPT, A_OUT, A_REM, A_U1, A_U2 = range(6)
A_FAC, A_KEY, A_PEND = range(3)
# routing modes
SERVICE, HTTPROUTE, INFERENCEPOOL = 0, 1, 2
# histogram kinds
K_TTFT, K_ITL, K_E2E = 0, 1, 2


def _identity(f):
    return f


def _jit():
    if os.environ.get("TOKENFACTORY_SIM_JIT", "1") == "0":
        return _identity, False
    try:
        import numba
    except ImportError:  # pragma: no cover - depends on the environment
        return _identity, False
    return numba.njit(cache=True, nogil=True), True


jit, JIT = _jit()


@jit
def _observe(kind, e, value, weight, pool, edges, lut, hist, hsum, fine):
    fi = np.searchsorted(edges, value)
    hist[e, lut[fi]] += weight
    hsum[e, kind] += value * weight
    fine[pool, kind, fi] += weight


@jit
def _group(ei, ef, t, nrows, key_col, ngroups, rows, start, count):
    """Serving engines grouped by ``key_col`` (factory or pool): ``rows[start[g]:start[g]+count[g]]``."""
    for g in range(ngroups):
        count[g] = 0
    for e in range(nrows):
        if ei[e, ACTIVE] == 1 and ef[e, SERVING_FROM] <= t:
            count[ei[e, key_col]] += 1
    acc = 0
    for g in range(ngroups):
        start[g] = acc
        acc += count[g]
        count[g] = 0
    for e in range(nrows):
        if ei[e, ACTIVE] == 1 and ef[e, SERVING_FROM] <= t:
            g = ei[e, key_col]
            rows[start[g] + count[g]] = e
            count[g] += 1


@jit
def _route(a, ef, ei, af, ai, mode, pool_w, pool_fac, npools, f_rows, f_start, f_count, p_rows, p_start, p_count):
    """Engine row for arrival ``a`` (-1: dropped)."""
    f = ai[a, A_FAC]
    n = f_count[f]
    if mode == SERVICE:
        if n == 0:
            return -1
        k = int(af[a, A_U1] * n)
        if k >= n:
            k = n - 1
        return f_rows[f_start[f] + k]
    if mode == HTTPROUTE:
        total = 0.0
        for p in range(npools):
            if pool_fac[p] == f and pool_w[p] > 0:
                total += pool_w[p]
        if total <= 0:
            return -1
        x = af[a, A_U1] * total
        pick = -1
        for p in range(npools):
            if pool_fac[p] == f and pool_w[p] > 0:
                pick = p
                if x < pool_w[p]:
                    break
                x -= pool_w[p]
        m = p_count[pick]
        if m == 0:
            return -1  # the backend has no ready endpoint: the gateway answers 5xx
        k = int(af[a, A_U2] * m)
        if k >= m:
            k = m - 1
        return p_rows[p_start[pick] + k]
    # INFERENCEPOOL: least (running + waiting) / max_num_seqs, KV usage breaking ties; scan from a
    # random start so that equal pods share the load
    if n == 0:
        return -1
    best = -1
    best_load = 1e300
    start = int(af[a, A_U1] * n)
    for i in range(n):
        e = f_rows[f_start[f] + (start + i) % n]
        ms = ei[e, MAX_SEQS] if ei[e, MAX_SEQS] > 0 else 1
        load = (ei[e, NRUN] + ei[e, TAIL] - ei[e, HEAD]) / ms
        if ef[e, KV_CAP] > 0:
            load += 1e-6 * ef[e, KV_USED] / ef[e, KV_CAP]
        if load < best_load:
            best_load = load
            best = e
    return best


@jit
def run_ticks(ticks, af, ai, ef, ei, ctr, wf, wi, rf, ri, fdrop, mode, pool_w, pool_fac, nrows, npools,
              edges, lut_ttft, lut_itl, lut_e2e, h_ttft, h_itl, h_e2e, hsum, fine):
    """Advance ``nrows`` engines over the ticks ``ticks[k] .. ticks[k+1]``; ``af``/``ai``: the arrivals,
    sorted by time (re-routed ones first)."""
    q = wf.shape[1]
    na = af.shape[0]
    nfac = fdrop.shape[0]
    f_rows = np.empty(max(1, nrows), dtype=np.int64)
    f_start = np.zeros(max(1, nfac), dtype=np.int64)
    f_count = np.zeros(max(1, nfac), dtype=np.int64)
    p_rows = np.empty(max(1, nrows), dtype=np.int64)
    p_start = np.zeros(max(1, npools), dtype=np.int64)
    p_count = np.zeros(max(1, npools), dtype=np.int64)
    a = 0
    for k in range(len(ticks) - 1):
        t = ticks[k]
        t1 = ticks[k + 1]
        dt = t1 - t
        # 1. arrivals of this tick -> routed -> the engine's queue (bounded: the newest are dropped)
        if a < na:
            _group(ei, ef, t, nrows, FAC, nfac, f_rows, f_start, f_count)
            if mode == HTTPROUTE:
                _group(ei, ef, t, nrows, POOL, npools, p_rows, p_start, p_count)
        while a < na and (af[a, A_T] < t1 or k == len(ticks) - 2):
            e = _route(a, ef, ei, af, ai, mode, pool_w, pool_fac, npools, f_rows, f_start, f_count, p_rows,
                       p_start, p_count)
            if e < 0:
                fdrop[ai[a, A_FAC]] += 1.0
            elif ei[e, TAIL] - ei[e, HEAD] >= ei[e, MAX_WAIT]:
                ctr[e, C_DROPPED] += 1.0
            else:
                s = ei[e, TAIL] % q
                wf[e, s, R_ARR] = af[a, A_T]
                wf[e, s, R_PROMPT] = af[a, A_PROMPT]
                wf[e, s, R_OUT] = af[a, A_OUT]
                wf[e, s, R_REM] = af[a, A_REM]
                wi[e, s, R_KEY] = ai[a, A_KEY]
                wi[e, s, R_PEND] = ai[a, A_PEND]
                ei[e, TAIL] += 1
            a += 1
        for e in range(nrows):
            if ei[e, ACTIVE] == 0:
                continue
            serving = ef[e, SERVING_FROM] <= t
            base = ef[e, BASE]
            per_seq = ef[e, PER_SEQ]
            per_tok = ef[e, PER_TOK]
            pool = ei[e, POOL]
            # 2. admission: FIFO under max_num_seqs and the KV budget; prefill FIFO (chunks packed
            # into steps of max_num_batched_tokens, sharing them with the decodes)
            while serving and ei[e, HEAD] < ei[e, TAIL] and ei[e, NRUN] < ei[e, MAX_SEQS]:
                s = ei[e, HEAD] % q
                need = wf[e, s, R_PROMPT] + wf[e, s, R_OUT] - wf[e, s, R_REM]
                if ef[e, KV_USED] + need > ef[e, KV_CAP] and ei[e, NRUN] > 0:
                    break
                b = ei[e, NRUN] + 1.0
                chunk = ef[e, BUDGET] - b
                if chunk < 1.0:
                    chunk = 1.0
                t_dec = base + per_seq * b
                ta = wf[e, s, R_ARR]
                if ta < t:
                    ta = t
                start = ta if ta > ef[e, PF_FREE] else ef[e, PF_FREE]
                done = start + (need - 1.0) * (per_tok + t_dec / chunk)
                ef[e, PF_FREE] = done
                j = ei[e, NRUN]
                rf[e, j, R_ARR] = wf[e, s, R_ARR]
                rf[e, j, R_PROMPT] = wf[e, s, R_PROMPT]
                rf[e, j, R_OUT] = wf[e, s, R_OUT]
                rf[e, j, R_REM] = wf[e, s, R_REM]
                rf[e, j, R_FT] = done + t_dec
                ri[e, j, R_KEY] = wi[e, s, R_KEY]
                ri[e, j, R_PEND] = wi[e, s, R_PEND]
                ei[e, NRUN] += 1
                ei[e, HEAD] += 1
                ef[e, KV_USED] += need
            n = ei[e, NRUN]
            if n == 0:
                continue
            # 3. steps in this tick: prefills completing in it add their tokens to the steps' time
            b = float(n)
            t_dec = base + per_seq * b
            pf_tok = 0.0
            pf_n = 0.0
            for j in range(n):
                ft = rf[e, j, R_FT]
                if ft > t and ft <= t1:
                    pf_tok += rf[e, j, R_PROMPT] + rf[e, j, R_OUT] - rf[e, j, R_REM] - 1.0
                    pf_n += 1.0
            chunk = ef[e, BUDGET] - b
            if chunk < 1.0:
                chunk = 1.0
            steps = (dt - per_tok * pf_tok) / t_dec
            if steps < 0.0:
                steps = 0.0
            k_pf = pf_tok / chunk
            if pf_n > k_pf:
                k_pf = pf_n
            if k_pf > steps:
                k_pf = steps
            t_pf = t_dec + (per_tok * pf_tok / k_pf if k_pf > 0 else 0.0)
            rate = steps / dt
            tokens_e = 0.0
            j = 0
            while j < n:
                ft = rf[e, j, R_FT]
                if ri[e, j, R_PEND] == 1 and ft <= t1:  # first token
                    ri[e, j, R_PEND] = 0
                    _observe(K_TTFT, e, ft - rf[e, j, R_ARR], 1.0, pool, edges, lut_ttft, h_ttft, hsum, fine)
                    ctr[e, C_GEN] += 1.0
                    ctr[e, C_PROMPT] += rf[e, j, R_PROMPT]
                start = ft if ft > t else t
                finished = False
                if start < t1:
                    g = (t1 - start) * rate
                    rem = rf[e, j, R_REM]
                    if g >= rem:
                        tokens_e += rem
                        ctr[e, C_GEN] += rem
                        fin = start + (rem / rate if rate > 0 else 0.0)
                        _observe(K_E2E, e, fin - rf[e, j, R_ARR], 1.0, pool, edges, lut_e2e, h_e2e, hsum, fine)
                        ctr[e, C_SUCCESS] += 1.0
                        ef[e, KV_USED] -= rf[e, j, R_PROMPT] + rf[e, j, R_OUT] - rem
                        finished = True
                    else:
                        tokens_e += g
                        ctr[e, C_GEN] += g
                        rf[e, j, R_REM] = rem - g
                        ef[e, KV_USED] += g
                if finished:  # swap-remove
                    last = n - 1
                    if j != last:
                        for c in range(NRF):
                            rf[e, j, c] = rf[e, last, c]
                        for c in range(NRI):
                            ri[e, j, c] = ri[e, last, c]
                    n -= 1
                else:
                    j += 1
            ei[e, NRUN] = n
            if tokens_e > 0 and steps > 0:
                frac = k_pf / steps
                if frac > 0:
                    _observe(K_ITL, e, t_pf, tokens_e * frac, pool, edges, lut_itl, h_itl, hsum, fine)
                if frac < 1:
                    _observe(K_ITL, e, t_dec, tokens_e * (1.0 - frac), pool, edges, lut_itl, h_itl, hsum, fine)
            # 4. KV budget: preempt the newest sequences (keep one), back to the queue's head
            while ef[e, KV_USED] > ef[e, KV_CAP] * (1 + 1e-9) and ei[e, NRUN] > 1:
                n = ei[e, NRUN]
                newest = 0
                for j in range(1, n):
                    if ri[e, j, R_KEY] > ri[e, newest, R_KEY]:
                        newest = j
                ei[e, HEAD] -= 1
                s = ei[e, HEAD] % q
                wf[e, s, R_ARR] = rf[e, newest, R_ARR]
                wf[e, s, R_PROMPT] = rf[e, newest, R_PROMPT]
                wf[e, s, R_OUT] = rf[e, newest, R_OUT]
                wf[e, s, R_REM] = rf[e, newest, R_REM]
                wi[e, s, R_KEY] = ri[e, newest, R_KEY]
                wi[e, s, R_PEND] = ri[e, newest, R_PEND]
                ef[e, KV_USED] -= rf[e, newest, R_PROMPT] + rf[e, newest, R_OUT] - rf[e, newest, R_REM]
                last = n - 1
                if newest != last:
                    for c in range(NRF):
                        rf[e, newest, c] = rf[e, last, c]
                    for c in range(NRI):
                        ri[e, newest, c] = ri[e, last, c]
                ei[e, NRUN] = n - 1
                ctr[e, C_PREEMPTED] += 1.0
    return a
