"""Horizontal bar charts as plain geometry, which a template draws as SVG (`chart.html`).

The console has no JavaScript build and its Content-Security-Policy forbids inline style, so a
chart is computed here, on the server, down to each rectangle's coordinates, and the template
only writes them out (every label through Jinja's autoescape). Horizontal bars keep long labels
(a phase's name) readable on a phone. The numbers are in user units of the SVG's `viewBox`: the
chart scales to the width it is given.
"""

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 460
LABEL_WIDTH = 150  # the labels, right-aligned before their bars
VALUE_WIDTH = 100  # after the longest bar, room for its value's text ("no activations")
BAR_AREA = WIDTH - LABEL_WIDTH - VALUE_WIDTH
ROW_HEIGHT = 28
BAR_HEIGHT = 18
GAP = 6  # between a label, its bar and its value
MIN_BAR = 2.0  # a value above 0 stays visible however small beside the largest
LABEL_CHARS = 20  # longer labels are cut in the chart (the table beside it has them whole)


@dataclass(frozen=True)
class Datum:
    """One row to chart. `value` None draws no bar and shows only `text` (why there is none)."""

    label: str
    value: float | None
    text: str  # the value as a person reads it: "3", "42.0 s", "no activations"
    kind: str = "default"  # what colours the bar: the CSS class `bar-<kind>`


@dataclass(frozen=True)
class Bar:
    """One row's geometry: its label, its bar (if any) and its value's text."""

    label: str  # as drawn, cut to LABEL_CHARS
    full_label: str
    text: str
    kind: str
    top: float
    width: float
    drawn: bool  # whether there is a bar at all (a value of 0 is a bar of width 0)

    @property
    def bar_x(self) -> float:
        return LABEL_WIDTH

    @property
    def bar_y(self) -> float:
        return self.top + (ROW_HEIGHT - BAR_HEIGHT) / 2

    @property
    def middle_y(self) -> float:
        """Where the row's texts sit (the template centres them with `dy`)."""
        return self.top + ROW_HEIGHT / 2

    @property
    def label_x(self) -> float:
        return LABEL_WIDTH - GAP

    @property
    def value_x(self) -> float:
        return LABEL_WIDTH + self.width + GAP


@dataclass(frozen=True)
class BarChart:
    chart_id: str  # unique in its page: the SVG's id, and its description's
    title: str  # the accessible name
    summary: str  # every row in words: the accessible description
    width: int
    height: int
    bar_height: int
    bars: tuple[Bar, ...]


def bar_chart(chart_id: str, title: str, data: Sequence[Datum]) -> BarChart:
    """Rows top to bottom in the order given, bars scaled to the largest value (which fills
    BAR_AREA); with no value above 0 every bar has width 0."""
    largest = max((d.value for d in data if d.value is not None), default=0.0)
    bars = tuple(_bar(index, datum, largest) for index, datum in enumerate(data))
    summary = "; ".join(f"{d.label}: {d.text}" for d in data) or "nothing to show"
    height = ROW_HEIGHT * max(len(data), 1)
    return BarChart(chart_id, title, summary, WIDTH, height, BAR_HEIGHT, bars)


def _bar(index: int, datum: Datum, largest: float) -> Bar:
    return Bar(
        label=shorten(datum.label),
        full_label=datum.label,
        text=datum.text,
        kind=datum.kind,
        top=float(index * ROW_HEIGHT),
        width=bar_width(datum.value, largest),
        drawn=datum.value is not None,
    )


def bar_width(value: float | None, largest: float) -> float:
    """`value`'s share of BAR_AREA, to one decimal; at least MIN_BAR when above 0."""
    if value is None or value <= 0 or largest <= 0:
        return 0.0
    return round(max(MIN_BAR, value / largest * BAR_AREA), 1)


def shorten(label: str, limit: int = LABEL_CHARS) -> str:
    """`label`, cut to `limit` characters with an ellipsis when longer."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def seconds_text(seconds: float) -> str:
    """A duration as a person reads it: "8.4 s", "4 min 05 s", "2 h 03 min"."""
    if round(seconds, 1) < 60:  # 59.97 s reads "1 min 00 s", not "60.0 s"
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
