import pytest

from gpudiag.measure import stats


def test_percentiles_interpolate_like_numpy():
    xs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert stats.median(xs) == 5.5
    assert stats.percentile(xs, 10) == pytest.approx(1.9)
    assert stats.percentile(xs, 90) == pytest.approx(9.1)
    assert stats.percentile([4.0], 90) == 4.0


def test_summarize_and_spread():
    s = stats.summarize([3, 1, 2])
    assert (s["n"], s["median"], s["min"], s["max"], s["mean"]) == (3, 2, 1, 3, 2)
    assert stats.summarize([])["median"] is None
    assert stats.relative_spread([10, 10, 10]) == 0
    assert stats.relative_spread([]) is None
    with pytest.raises(ValueError):
        stats.percentile([1], 101)
