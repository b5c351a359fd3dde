"""Bootstrap confidence intervals and paired tests."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats as sps

from fusionrec.evaluation.stats import bootstrap_ci, bootstrap_counts, bootstrap_statistic_ci, paired_test, paired_tests


def test_bootstrap_counts_resample_n_users_each_time_and_repeat_with_the_seed() -> None:
    blocks = list(bootstrap_counts(50, 300, seed=4))
    w = np.vstack(blocks)
    assert w.shape == (300, 50)
    np.testing.assert_array_equal(w.sum(axis=1), 50)
    np.testing.assert_array_equal(w, np.vstack(list(bootstrap_counts(50, 300, seed=4))))
    assert not np.array_equal(w, np.vstack(list(bootstrap_counts(50, 300, seed=5))))


def test_bootstrap_ci_brackets_the_mean_with_the_normal_width() -> None:
    rng = np.random.default_rng(0)
    v = rng.random(2000)
    lo, hi = bootstrap_ci(v, n_bootstrap=2000, seed=1)
    assert lo < v.mean() < hi
    se = v.std(ddof=1) / np.sqrt(len(v))
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
    both = bootstrap_ci(np.column_stack([v, 2 * v]), n_bootstrap=2000, seed=1)
    np.testing.assert_allclose(both[0], [lo, hi])
    np.testing.assert_allclose(both[1], [2 * lo, 2 * hi])
    np.testing.assert_allclose(bootstrap_ci(np.full(10, 0.25)), [0.25, 0.25])


def test_bootstrap_statistic_ci_of_column_sums() -> None:
    rng = np.random.default_rng(2)
    m = sp.csr_matrix((rng.random((300, 20)) < 0.1).astype(float))
    share = lambda counts: (counts > 0).mean(axis=1)  # noqa: E731 - coverage of 20 items
    lo, hi = bootstrap_statistic_ci(m, share, n_bootstrap=500, seed=0)
    assert 0 <= lo <= hi <= 1 and lo <= share(np.asarray(m.sum(axis=0)))[0] <= hi


def test_paired_test_detects_a_real_difference_and_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    b = rng.random(500)
    a = b + 0.05 + rng.normal(0, 0.1, 500)
    t = paired_test(a, b, n_bootstrap=1000, seed=0)
    assert t.diff == pytest.approx(float((a - b).mean()))
    assert t.ci[0] < t.diff < t.ci[1] and t.ci[0] > 0
    assert t.p_bootstrap < 0.01
    assert t.p_ttest == pytest.approx(float(sps.ttest_rel(a, b).pvalue))
    assert t.n_users == 500
    d = t.to_dict()
    assert set(d) == {"diff", "ci", "p_bootstrap", "p_ttest", "n_users"} and isinstance(d["ci"], list)


def test_paired_test_finds_no_difference_where_there_is_none() -> None:
    rng = np.random.default_rng(2)
    a = rng.random(400)
    same = paired_test(a, a.copy())
    assert same.diff == 0 and same.p_bootstrap == 1.0 and same.p_ttest == 1.0
    noise = paired_test(a, rng.permutation(a), seed=3)
    assert noise.ci[0] < 0 < noise.ci[1] and noise.p_bootstrap > 0.05


def test_paired_tests_batch_equals_one_by_one() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random((200, 3)), rng.random((200, 3))
    batch = paired_tests(a, b, seed=9)
    for j in range(3):
        one = paired_test(a[:, j], b[:, j], seed=9)
        assert batch[j].diff == pytest.approx(one.diff) and batch[j].ci == pytest.approx(one.ci)
        assert (batch[j].p_bootstrap, batch[j].p_ttest) == pytest.approx((one.p_bootstrap, one.p_ttest))
    with pytest.raises(ValueError):
        paired_test(a[:, 0], b[:10, 0])
