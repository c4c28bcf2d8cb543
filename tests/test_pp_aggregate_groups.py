"""Grouped kernels in imgprof._core.groups (used by aggregate, consensus, normalize, qc)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from imgprof._core import groups as G


def _random_case(seed, n=3000, p=17, n_groups=9, nan=0.1, ties=False):
    rng = np.random.default_rng(seed)
    X = rng.lognormal(size=(n, p))
    if ties:
        X = np.round(X, 1)
    X[rng.random(X.shape) < nan] = np.nan
    # skewed group sizes so that both kernel paths (< 512 and >= 512 rows) run
    codes = np.minimum(rng.geometric(0.25, size=n) - 1, n_groups - 1)
    return X, codes


def test_group_codes_follow_pandas_groupby_order():
    obs = pd.DataFrame(
        {
            "plate": ["p2", "p1", "p2", None, "p1"],
            "well": pd.Categorical(["B", "A", "A", "A", "B"], categories=["B", "A"]),
        }
    )
    codes, groups = G.group_codes(obs, ["plate", "well"])
    expected = obs.groupby(["plate", "well"], dropna=False, observed=True).ngroup().to_numpy()
    assert codes.tolist() == expected.tolist()
    assert groups["well"].dtype == obs["well"].dtype  # categorical kept
    assert pd.isna(groups["plate"].iloc[-1])  # NaN group last
    codes2, groups2 = G.group_codes(obs, ["plate"], dropna=True)
    assert codes2[3] == -1 and len(groups2) == 2
    with pytest.raises(KeyError, match="nope"):
        G.group_codes(obs, ["plate", "nope"])
    with pytest.raises(ValueError):
        G.group_codes(obs, [])


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("func", ["median", "mean", "sum", "count", "std", "var", "min", "max"])
def test_group_reduce_matches_pandas(func, ties):
    X, codes = _random_case(1, ties=ties)
    out = G.group_reduce(X, codes, 9, func)
    ref = getattr(pd.DataFrame(X).groupby(codes), func)().reindex(range(9)).to_numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_median_exact_and_independent_of_threads_and_blocks():
    X, codes = _random_case(2, n=5000, p=40, ties=True)
    ref = pd.DataFrame(X).groupby(codes).median().to_numpy()
    for n_jobs, block in ((1, None), (2, None), (2, 3), (3, 7)):
        out = G.group_reduce(X, codes, 9, "median", n_jobs=n_jobs, block_size=block)
        np.testing.assert_array_equal(out, ref)  # medians are exact order statistics


def test_float32_and_integer_input():
    X, codes = _random_case(3, nan=0.0)
    ref = pd.DataFrame(X.astype(np.float32).astype(np.float64)).groupby(codes).median().to_numpy()
    np.testing.assert_array_equal(G.group_reduce(X.astype(np.float32), codes, 9), ref)
    Xi = (X * 10).astype(np.int64)
    np.testing.assert_array_equal(G.group_reduce(Xi, codes, 9), pd.DataFrame(Xi).groupby(codes).median().to_numpy())


def test_mad_matches_scipy():
    X, codes = _random_case(4)
    med, mad = G.group_median_mad(X, codes, 9, mad_scale="normal")
    for g in range(9):
        rows = X[codes == g]
        np.testing.assert_allclose(
            mad[g], scipy.stats.median_abs_deviation(rows, axis=0, nan_policy="omit", scale="normal"), rtol=1e-12
        )
        np.testing.assert_array_equal(med[g], np.nanmedian(rows, axis=0))
    np.testing.assert_array_equal(G.group_reduce(X, codes, 9, "mad", mad_scale="normal"), mad)


def test_numpy_fallback_equals_numba(monkeypatch):
    X, codes = _random_case(5)
    codes[:7] = -1
    fast = {f: G.group_reduce(X, codes, 10, f) for f in ("median", "mad", "mean", "std", "count", "min")}
    monkeypatch.setattr(G, "_NUMBA", {})
    for f, v in fast.items():
        np.testing.assert_allclose(G.group_reduce(X, codes, 10, f), v, rtol=1e-12, equal_nan=True, err_msg=f)


def test_empty_groups_ignored_rows_min_count_and_inf():
    X = np.array([[1.0, np.nan], [2.0, np.nan], [4.0, 1.0], [9.0, 2.0]])
    codes = np.array([0, 0, 2, -1])
    out = G.group_reduce(X, codes, 3, "median")
    assert out[0, 0] == 1.5 and np.isnan(out[0, 1]) and np.isnan(out[1]).all() and out[2].tolist() == [4.0, 1.0]
    assert G.group_reduce(X, codes, 3, "count")[:, 0].tolist() == [2.0, 0.0, 1.0]
    assert np.isnan(G.group_reduce(X, codes, 3, "median", min_count=2)[2]).all()
    X[0, 0] = -np.inf
    with pytest.raises(ValueError, match="inf"):
        G.group_reduce(X, codes, 3, "median")
    with pytest.raises(ValueError, match="func"):
        G.group_reduce(X, codes, 3, "mode")
    with pytest.raises(ValueError, match="one code per row"):
        G.group_reduce(X, codes[:2], 3)


def test_sort_groups_and_constant_detection():
    codes = np.array([2, 0, 2, 1, 0])
    order, starts = G.sort_groups(codes, 3)
    assert order.tolist() == [1, 4, 3, 0, 2] and starts.tolist() == [0, 2, 3, 5]
    const, first = G.group_first_constant(pd.Series(["a", "a", "a", "b", "a"]), order, starts)
    assert const and first.tolist() == [1, 3, 0]
    const, _ = G.group_first_constant(pd.Series(["a", "x", "a", "b", "a"]), order, starts)
    assert not const


def test_dask_reductions_and_group_apply():
    da = pytest.importorskip("dask.array")
    X, codes = _random_case(6, n=2000, p=13)
    codes[::50] = -1
    Xd = da.from_array(X, chunks=(301, 5))
    for f in ("median", "mean", "mad", "count", "std"):
        np.testing.assert_allclose(G.group_reduce(Xd, codes, 9, f), G.group_reduce(X, codes, 9, f), rtol=1e-12, equal_nan=True)
    m1, d1 = G.group_median_mad(Xd, codes, 9)
    m2, d2 = G.group_median_mad(X, codes, 9)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(d1, d2)

    def fn(x, c, n):
        return np.stack([np.nanmax(x[c == g], axis=0) for g in range(n)])

    np.testing.assert_array_equal(G.group_apply(Xd, codes, 9, fn), G.group_apply(X, codes, 9, fn))


def test_median_kernel_on_awkward_orders_and_ties():
    rng = np.random.default_rng(7)
    n = 4000
    cols = [
        np.full(n, 3.0),  # all equal
        np.arange(n, dtype=float),  # sorted
        np.arange(n, dtype=float)[::-1],  # reversed
        rng.integers(0, 2, n).astype(float),  # two values
        np.tile([1.0, 5.0, 1.0, 9.0], n // 4),  # organ-pipe-ish repeats
        -rng.exponential(size=n),  # negative, skewed
    ]
    X = np.column_stack(cols)
    for codes in (np.zeros(n, dtype=int), np.repeat(np.arange(100), 40), np.arange(n) % 7):
        ng = codes.max() + 1
        out = G.group_reduce(X, codes, ng, "median", n_jobs=1)
        ref = np.stack([np.median(X[codes == g], axis=0) for g in range(ng)])
        np.testing.assert_array_equal(out, ref)


def test_median_mad_with_an_all_inf_column_terminates():
    import numpy as np

    from imgprof._core.groups import group_median_mad

    X = np.full((40, 2), np.inf)
    X[:, 1] = np.arange(40.0)
    med, mad = group_median_mad(X, np.zeros(40, dtype=np.int64), 1, inf="propagate", n_jobs=1)
    assert med[0, 0] == np.inf and np.isnan(mad[0, 0])
    assert med[0, 1] == 19.5 and mad[0, 1] == 10.0


@pytest.mark.parametrize("kind", ["normal", "ties", "with_inf", "sorted", "bimodal"])
def test_sample_filter_median_is_exact_around_the_threshold(kind):
    """Groups of 590-1,210 rows (both sides of the sample-filter threshold), odd and even sizes."""
    rng = np.random.default_rng(11)
    sizes = np.array([590, 599, 600, 601, 602, 777, 1200, 1201, 1210])
    codes = np.repeat(np.arange(sizes.size), sizes)
    n = codes.size
    if kind == "normal":
        X = rng.normal(size=(n, 6))
    elif kind == "ties":
        X = rng.integers(0, 4, size=(n, 6)).astype(float)
    elif kind == "with_inf":
        X = rng.normal(size=(n, 6))
        X[rng.random(X.shape) < 0.3] = np.inf
        X[rng.random(X.shape) < 0.25] = -np.inf
    elif kind == "sorted":
        X = np.tile(np.arange(n, dtype=float)[:, None], (1, 6))
    else:  # two far-apart modes: the middle ranks sit in a gap
        X = np.where(rng.random((n, 6)) < 0.5, rng.normal(size=(n, 6)), 1e6 + rng.normal(size=(n, 6)))
    med, mad = G.group_median_mad(X, codes, sizes.size, want_mad=True, inf="propagate", n_jobs=1)
    for g in range(sizes.size):
        xg = X[codes == g]
        ref = np.median(xg, axis=0)
        np.testing.assert_array_equal(med[g], ref)
        finite = np.isfinite(ref)
        np.testing.assert_array_equal(mad[g][finite], np.median(np.abs(xg - ref), axis=0)[finite])
