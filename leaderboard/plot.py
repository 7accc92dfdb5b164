"""The privacy–utility plot: geometry for an inline SVG, one plot per choice of attack.

x is ``utility.accuracy`` and y ``privacy.score`` (both in [0, 1], higher is better); each defense
spec is a point with its std over seeds as error bars, the specs of one defense name (a sweep) are
joined by a line, and the Pareto front (points no other point beats on both axes) is marked.
The template draws it; every text goes through Jinja's autoescape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from leaderboard.model import SCORE, DatasetPage, DefenseRow, Stat

WIDTH, HEIGHT = 600, 400
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 16, 56
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")
HEADLINE = "headline: worst case over the claimed threat models"
CHAR_WIDTH, LABEL_CHARS = 6.4, 30  # 11 px labels
LABEL_DY = (-8, 14, -20, 26, -32, 38, -44)


def px(value: float) -> float:
    """Data x in [0, 1] to SVG x."""
    return round(LEFT + max(0.0, min(1.0, value)) * (WIDTH - LEFT - RIGHT), 1)


def py(value: float) -> float:
    """Data y in [0, 1] to SVG y (up is higher)."""
    return round(HEIGHT - BOTTOM - max(0.0, min(1.0, value)) * (HEIGHT - TOP - BOTTOM), 1)


@dataclass
class Point:
    """One defense spec on the plot."""

    label: str
    colour: str
    x: Stat
    y: Stat
    pareto: bool = False
    label_dx: float = 10.0  # where the label sits relative to the point, set by place_labels
    label_dy: float = -8.0

    @property
    def cx(self) -> float:
        return px(self.x.mean)

    @property
    def cy(self) -> float:
        return py(self.y.mean)

    @property
    def label_anchor(self) -> str:
        return "end" if self.label_dx < 0 else "start"

    @property
    def short_label(self) -> str:
        return self.label if len(self.label) <= LABEL_CHARS else self.label[:LABEL_CHARS - 1] + "…"

    @property
    def leader(self) -> bool:
        """Whether the label sits far enough from its point to need a line to it."""
        return abs(self.label_dy) > 14

    def label_box(self) -> tuple[float, float, float, float]:
        """The label's approximate bounding box (left, top, right, bottom) in SVG units."""
        width = CHAR_WIDTH * len(self.short_label)
        left = self.cx + self.label_dx - (width if self.label_dx < 0 else 0)
        top = self.cy + self.label_dy - 10
        return left, top, left + width, top + 13

    def x_bar(self) -> tuple[float, float]:
        spread = self.x.std or 0.0
        return px(self.x.mean - spread), px(self.x.mean + spread)

    def y_bar(self) -> tuple[float, float]:
        spread = self.y.std or 0.0
        return py(self.y.mean - spread), py(self.y.mean + spread)

    def title(self, y_name: str) -> str:
        return (f"{self.label}\nutility.accuracy {self.x.text()} (n={self.x.n})\n"
                f"{y_name} {self.y.text()} (n={self.y.n})")


@dataclass
class Plot:
    """One privacy–utility plot: the points, sweep lines and Pareto front for one y choice."""

    key: str
    choice: str
    y_label: str
    left_out: list[str] = field(default_factory=list)  # defense specs left out, as incomplete
    points: list[Point] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (colour, SVG polyline points)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (defense name, colour)
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def pareto_line(self) -> str:
        front = sorted((p for p in self.points if p.pareto), key=lambda p: (p.x.mean, -p.y.mean))
        return " ".join(f"{p.cx},{p.cy}" for p in front)

    @property
    def ticks(self) -> list[tuple[float, float, str]]:
        """(x position, y position, label) for 0, 0.2, ..., 1 on both axes."""
        return [(px(v / 5), py(v / 5), f"{v / 5:.1f}") for v in range(6)]

    @property
    def frame(self) -> dict[str, float]:
        return {"left": LEFT, "right": WIDTH - RIGHT, "top": TOP, "bottom": HEIGHT - BOTTOM,
                "middle_x": (LEFT + WIDTH - RIGHT) / 2, "middle_y": (TOP + HEIGHT - BOTTOM) / 2}


def overlap_area(a: tuple, b: tuple) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def label_cost(box: tuple, placed: list[tuple]) -> float:
    """How bad a label box is: far outside the frame, then overlapping what is placed."""
    outside = max(0, LEFT - box[0]) + max(0, box[2] - WIDTH + RIGHT) + max(0, TOP - box[1]) \
        + max(0, box[3] - HEIGHT + BOTTOM)
    return 1000 * outside + sum(overlap_area(box, other) for other in placed)


def place_labels(points: list[Point]) -> None:
    """Greedy label placement: per point (top to bottom), the offset whose label box stays inside
    the frame and overlaps the labels and markers placed so far least; nearer offsets win ties,
    and points on the right prefer labels on their left."""
    placed: list[tuple] = [(p.cx - 6, p.cy - 6, p.cx + 6, p.cy + 6) for p in points]
    for point in sorted(points, key=lambda p: (p.cy, p.cx)):
        side = -1 if point.cx > LEFT + 0.6 * (WIDTH - LEFT - RIGHT) else 1
        candidates = [(side * dx, dy) for dy in LABEL_DY for dx in (10, -10)]
        best, best_cost = candidates[0], float("inf")
        for rank, (dx, dy) in enumerate(candidates):
            point.label_dx, point.label_dy = dx, dy
            cost = label_cost(point.label_box(), placed) + rank * 0.5
            if cost < best_cost:
                best, best_cost = (dx, dy), cost
        point.label_dx, point.label_dy = best
        placed.append(point.label_box())


def mark_pareto(points: list[Point]) -> None:
    """Mark the points that no other point beats on both axes (>= on both, > on one)."""
    for p in points:
        p.pareto = not any(q.x.mean >= p.x.mean and q.y.mean >= p.y.mean
                           and (q.x.mean > p.x.mean or q.y.mean > p.y.mean) for q in points)


def sweep_lines(points: list[Point], names: list[str]) -> list[tuple[str, str]]:
    """A line through the points of each defense name with more than one spec, by utility."""
    lines = []
    for name in dict.fromkeys(names):
        members = sorted((p for p, n in zip(points, names, strict=True) if n == name), key=lambda p: p.x.mean)
        if len(members) > 1:
            lines.append((members[0].colour, " ".join(f"{p.cx},{p.cy}" for p in members)))
    return lines


def build_plot(key: str, choice: str, y_label: str, rows: list[DefenseRow], y_of,
               left_out: list[str] | None = None) -> Plot:
    """The plot of ``rows`` with ``y_of(row)`` (a Stat or None) on the y axis; ``left_out`` names the
    incomplete defenses the caller left out of ``rows``."""
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted({r.name for r in rows}))}
    plot = Plot(key, choice, y_label, left_out or [])
    names = []
    for row in rows:
        x, y = row.stat("utility.accuracy"), y_of(row)
        if x is not None and y is not None:
            plot.points.append(Point(row.spec, colours[row.name], x, y))
            names.append(row.name)
    mark_pareto(plot.points)
    place_labels(plot.points)
    plot.lines = sweep_lines(plot.points, names)
    plot.legend = [(name, colours[name]) for name in dict.fromkeys(names)]
    return plot


def split_rows(rows: list[DefenseRow], incomplete) -> tuple[list[DefenseRow], list[str]]:
    """The rows ``incomplete(row)`` keeps, and the specs of those it leaves out."""
    return [r for r in rows if not incomplete(r)], [r.spec for r in rows if incomplete(r)]


def page_plots(page: DatasetPage) -> list[Plot]:
    """The headline plot first (complete defenses only), then one per threat model (defenses with no
    failed or missing cell under it), then one per attack; only plots with points."""
    kept, left_out = split_rows(page.rows, lambda row: not row.complete)
    plots = [build_plot("p0", HEADLINE, f"headline {SCORE}", kept, lambda row: row.headline, left_out)]
    for tm in page.threat_models:
        kept, left_out = split_rows(page.rows, lambda row, tm=tm: row.problems_in(tm))
        plots.append(build_plot(f"p{len(plots)}", f"worst case under {tm} attacks", f"{SCORE} worst case, {tm}",
                                kept, lambda row, tm=tm: row.threat_stat(tm), left_out))
    for attack in page.attacks:
        def score(row: DefenseRow, spec: str = attack.spec) -> Stat | None:
            group = row.groups.get(spec)
            return group.score if group else None
        plots.append(build_plot(f"p{len(plots)}", f"{attack.spec} ({attack.threat_model})",
                                f"{SCORE} under {attack.spec}", page.rows, score))
    return [plot for plot in plots if plot.points]


# -- a line figure over categories (He et al.'s PSNR by split depth, published vs measured) -------------

@dataclass
class Series:
    """One attacker's line: its colour and, per category, the published and measured value (or None)."""

    label: str
    colour: str
    published: list[tuple[float, float, str]] = field(default_factory=list)  # (SVG x, SVG y, tooltip)
    measured: list[tuple[float, float, str]] = field(default_factory=list)

    @staticmethod
    def line(marks: list[tuple[float, float, str]]) -> str:
        return " ".join(f"{x},{y}" for x, y, _ in marks)


@dataclass
class LineFigure:
    """An inline-SVG line chart: categories on x, a value on y, two lines (published dashed, measured
    solid) per series."""

    y_label: str
    categories: list[tuple[float, str]]  # (SVG x, label)
    y_ticks: list[tuple[float, str]]  # (SVG y, label)
    series: list[Series]
    frame: dict[str, float]
    width: int = WIDTH
    height: int = HEIGHT


def nice_top(value: float) -> tuple[float, float]:
    """An axis top at or above ``value`` and a tick step (1, 2, 5 times a power of ten, smallest
    first) that gives at most five steps."""
    scale = 0.01
    while True:
        for factor in (1, 2, 5):
            step = factor * scale
            if value / step <= 5:
                return step * max(1, math.ceil(value / step)), step
        scale *= 10


def line_figure(y_label: str, categories: list[str],
                series: dict[str, dict[str, tuple[float | None, float | None]]]) -> LineFigure:
    """The figure of ``series`` (label -> category -> (published, measured)); y starts at 0."""
    values = [v for points in series.values() for pair in points.values() for v in pair if v is not None]
    top, step = nice_top(max(values, default=1.0) * 1.05)
    span_x = (WIDTH - LEFT - RIGHT) / max(1, len(categories))
    xs = {name: round(LEFT + span_x * (i + 0.5), 1) for i, name in enumerate(categories)}

    def y_of(value: float) -> float:
        return round(HEIGHT - BOTTOM - max(0.0, min(1.0, value / top)) * (HEIGHT - TOP - BOTTOM), 1)

    lines = []
    for i, (label, points) in enumerate(series.items()):
        line = Series(label, PALETTE[i % len(PALETTE)])
        for name in categories:
            published, measured = points.get(name, (None, None))
            if published is not None:
                line.published.append((xs[name], y_of(published), f"{label} at {name}: published {published:.4g}"))
            if measured is not None:
                line.measured.append((xs[name], y_of(measured), f"{label} at {name}: measured {measured:.4g}"))
        lines.append(line)
    ticks = [(y_of(step * k), f"{step * k:g}") for k in range(int(round(top / step)) + 1)]
    frame = {"left": LEFT, "right": WIDTH - RIGHT, "top": TOP, "bottom": HEIGHT - BOTTOM,
             "middle_x": (LEFT + WIDTH - RIGHT) / 2, "middle_y": (TOP + HEIGHT - BOTTOM) / 2}
    return LineFigure(y_label, [(xs[name], name) for name in categories], ticks, lines, frame)
