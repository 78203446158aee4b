"""The platform page's bar charts as geometry (`api.charts`), and as the template draws them:
bars scaled to the largest value, rows stacked, labels cut and escaped, durations worded."""

from pathlib import Path

import pytest
from jinja2 import Environment, FileSystemLoader, select_autoescape

from tenant_pipelines.api import charts
from tenant_pipelines.api.charts import (
    BAR_AREA,
    LABEL_WIDTH,
    MIN_BAR,
    ROW_HEIGHT,
    Datum,
    bar_chart,
    bar_width,
    seconds_text,
    shorten,
)

pytestmark = pytest.mark.unit

TEMPLATES = Path(charts.__file__).parent / "templates"


def test_the_largest_value_fills_the_bar_area_and_the_rest_scale_to_it() -> None:
    chart = bar_chart("c", "Tenants", [Datum("a", 4, "4"), Datum("b", 2, "2"), Datum("c", 0, "0")])
    assert [bar.width for bar in chart.bars] == [BAR_AREA, BAR_AREA / 2, 0.0]
    assert all(bar.drawn for bar in chart.bars)  # 0 is a value: a bar of width 0


def test_rows_stack_top_to_bottom_in_the_order_given() -> None:
    chart = bar_chart("c", "T", [Datum(str(i), i, str(i)) for i in range(3)])
    assert [bar.top for bar in chart.bars] == [0, ROW_HEIGHT, 2 * ROW_HEIGHT]
    assert chart.height == 3 * ROW_HEIGHT
    bar = chart.bars[1]
    assert bar.bar_x == LABEL_WIDTH and bar.label_x < bar.bar_x  # the label ends before the bar
    assert bar.value_x > bar.bar_x + bar.width  # the value follows the bar
    assert bar.top < bar.bar_y and bar.bar_y + chart.bar_height < bar.top + ROW_HEIGHT


def test_a_tiny_value_stays_visible_and_nothing_above_zero_draws_nothing() -> None:
    assert bar_width(1, 10_000) == MIN_BAR
    assert bar_width(0, 10) == 0.0
    assert bar_width(5, 0) == 0.0  # no division by zero
    chart = bar_chart("c", "T", [Datum("a", 0, "0"), Datum("b", 0, "0")])
    assert [bar.width for bar in chart.bars] == [0.0, 0.0]


def test_a_row_without_a_value_draws_no_bar_and_says_why() -> None:
    chart = bar_chart("c", "T", [Datum("free", None, "no activations"), Datum("team", 3.0, "3")])
    empty, full = chart.bars
    assert not empty.drawn and empty.width == 0.0 and empty.text == "no activations"
    assert full.width == BAR_AREA  # the row without a value does not enter the scale
    assert empty.value_x == LABEL_WIDTH + charts.GAP


def test_the_summary_names_every_row_for_a_screen_reader() -> None:
    chart = bar_chart("c", "Tenants by state", [Datum("active", 3, "3"), Datum("failed", 1, "1")])
    assert chart.title == "Tenants by state"
    assert chart.summary == "active: 3; failed: 1"
    assert bar_chart("c", "T", []).summary == "nothing to show"


def test_long_labels_are_cut_in_the_chart_and_kept_whole_beside_it() -> None:
    long = "a phase with a very long name"
    assert shorten("short") == "short"
    assert shorten(long) == long[:19] + "…" and len(shorten(long)) == charts.LABEL_CHARS
    bar = bar_chart("c", "T", [Datum(long, 1, "1")]).bars[0]
    assert bar.label == shorten(long) and bar.full_label == long


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0.0 s"),
        (8.44, "8.4 s"),
        (59.9, "59.9 s"),
        (59.97, "1 min 00 s"),
        (245, "4 min 05 s"),
        (3599.6, "1 h 00 min"),
        (7380, "2 h 03 min"),
    ],
)
def test_durations_read_as_a_person_says_them(seconds: float, text: str) -> None:
    assert seconds_text(seconds) == text


def render(chart: charts.BarChart) -> str:
    """The console's macro, under the autoescape the console's Jinja2Templates turns on."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())
    macro = env.get_template("chart.html").module.bar_chart  # type: ignore[attr-defined]
    return str(macro(chart))


def test_the_template_draws_an_accessible_svg_from_the_geometry() -> None:
    chart = bar_chart("chart-x", "Tenants by state", [Datum("active", 2, "2", kind="active")])
    svg = render(chart)
    assert svg.startswith(
        '<svg class="chart" id="chart-x" role="img" aria-label="Tenants by state"'
    )
    assert "<title>Tenants by state</title>" in svg
    assert '<desc id="chart-x-desc">active: 2</desc>' in svg
    assert f'class="bar bar-active" x="{LABEL_WIDTH}"' in svg and f'width="{BAR_AREA}' in svg
    assert "style=" not in svg and "<script" not in svg  # the console's CSP allows neither


def test_every_label_in_the_svg_is_escaped() -> None:
    evil = '<script>alert("x")</script>'
    svg = render(bar_chart("c", evil, [Datum(evil, 1, evil, kind=evil)]))
    assert "<script" not in svg
    assert "&lt;script&gt;" in svg
