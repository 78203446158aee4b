"""Nearest-rank percentiles (`support.percentiles`), as the platform page reports submit-to-active:
always a value that was measured, never one interpolated between two."""

import pytest

from tenant_pipelines.support.percentiles import nearest_rank

pytestmark = pytest.mark.unit


def test_one_value_is_every_percentile() -> None:
    assert nearest_rank([42.0], 50) == 42.0
    assert nearest_rank([42.0], 95) == 42.0


def test_the_median_of_an_even_count_is_the_lower_middle_value_not_their_mean() -> None:
    assert nearest_rank([4.0, 1.0, 3.0, 2.0], 50) == 2.0  # rank ceil(0.5 * 4) = 2


def test_p95_of_twenty_values_is_the_nineteenth_and_of_twenty_one_the_twentieth() -> None:
    values = [float(v) for v in range(1, 21)]
    assert nearest_rank(values, 95) == 19.0  # ceil(19.0): no float error lifts it to 20
    assert nearest_rank([*values, 21.0], 95) == 20.0  # rank ceil(19.95) = 20


def test_the_order_of_the_values_does_not_matter() -> None:
    assert nearest_rank([9.0, 1.0, 5.0], 50) == 5.0
    assert nearest_rank((v for v in [9.0, 1.0, 5.0]), 100) == 9.0  # any iterable


def test_a_small_sample_p95_is_its_maximum() -> None:
    assert nearest_rank([1.0, 2.0, 3.0, 10.0], 95) == 10.0


@pytest.mark.parametrize("percent", [0, -5, 100.5])
def test_a_percent_out_of_range_is_refused(percent: float) -> None:
    with pytest.raises(ValueError, match="percent"):
        nearest_rank([1.0], percent)


def test_no_values_have_no_percentile() -> None:
    with pytest.raises(ValueError, match="no values"):
        nearest_rank([], 50)
