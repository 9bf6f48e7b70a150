"""Small charts for the desk, drawn here as inline SVG: no script and nothing fetched, so the page's
Content-Security-Policy (http/csp.py) has nothing to allow. Every label is escaped: story titles come from feeds.

Each chart has a <title> and an aria-label saying what it shows; the numbers are also in a table beside it."""

from __future__ import annotations

from datetime import datetime

from markupsafe import Markup, escape

WIDTH = 640
INK, GRID, MUTED = "#1d1d1b", "#e4e1da", "#6b6b66"
SERIES = ("#184a8c", "#b3261e", "#c25e00", "#1e5b2c")  # blue, red, orange, green: distinct in greyscale too


def _svg(height: int, label: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'style="max-width:{WIDTH}px" role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>'
        + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, anchor: str = "start", fill: str = MUTED, size: int = 11) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-family="Helvetica, Arial, sans-serif" '
            f'fill="{fill}" text-anchor="{anchor}">{escape(text)}</text>')


def per_minute(points: list[tuple[datetime, int]], label: str, zone=None) -> Markup:
    """Columns: messages sent each minute, the first and last minute named below (in `zone`)."""
    if not points:
        return Markup("")
    height, top, bottom, left = 150, 14, 22, 40
    most = max(n for _, n in points) or 1
    step = (WIDTH - left) / len(points)
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{WIDTH}" y2="{height - bottom}" stroke="{GRID}"/>',
            _text(left - 6, top + 4, f"{most:,}", "end"), _text(left - 6, height - bottom, "0", "end")]
    for i, (minute, n) in enumerate(points):
        bar = (height - top - bottom) * n / most
        width = min(max(step * 0.8, 1), 24)  # a send of a few minutes: columns, not slabs
        body.append(f'<rect x="{left + i * step + (step - width) / 2:.1f}" y="{height - bottom - bar:.1f}" '
                    f'width="{width:.1f}" height="{bar:.1f}" fill="{SERIES[0]}">'
                    f'<title>{escape(_minute(minute, zone))}: {n:,}</title></rect>')
    body.append(_text(left, height - 6, _minute(points[0][0], zone)))
    if len(points) > 1:
        body.append(_text(WIDTH, height - 6, _minute(points[-1][0], zone), "end"))
    return _svg(height, label, body)


def _minute(at: datetime, zone) -> str:
    return (at.astimezone(zone) if zone else at).strftime("%H:%M")


def bars(rows: list[tuple[str, int]], label: str) -> Markup:
    """Horizontal bars, one a row: a label (cut to fit) and its number."""
    if not rows:
        return Markup("")
    row, gap, left, right = 22, 6, 260, 60
    height = len(rows) * (row + gap) + gap
    most = max(n for _, n in rows) or 1
    body = []
    for i, (name, n) in enumerate(rows):
        y = gap + i * (row + gap)
        shown = name if len(name) <= 40 else name[:39] + "…"
        width = (WIDTH - left - right) * n / most
        body += [_text(left - 8, y + row * 0.7, shown, "end", INK, 12),
                 f'<rect x="{left}" y="{y}" width="{max(width, 1):.1f}" height="{row}" fill="{SERIES[0]}">'
                 f'<title>{escape(name)}: {n:,}</title></rect>',
                 _text(left + width + 6, y + row * 0.7, f"{n:,}", "start", INK, 12)]
    return _svg(height, label, body)


def lines(names: list[str], series: dict[str, list[float | None]], label: str) -> Markup:
    """A line per series over the same points (named below each), as percentages; a missing value breaks
    the line. The legend names each series in its colour."""
    if not names or not series:
        return Markup("")
    height, top, bottom, left, right = 180, 26, 22, 48, 12
    values = [v for vs in series.values() for v in vs if v is not None]
    most = max(values, default=0) or 0.01
    step = (WIDTH - left - right) / max(len(names) - 1, 1)

    def x(i: int) -> float:
        return left + (i * step if len(names) > 1 else (WIDTH - left - right) / 2)

    def y(v: float) -> float:
        return height - bottom - (height - top - bottom) * v / most

    body = [f'<line x1="{left}" y1="{y(0):.1f}" x2="{WIDTH - right}" y2="{y(0):.1f}" stroke="{GRID}"/>',
            f'<line x1="{left}" y1="{y(most):.1f}" x2="{WIDTH - right}" y2="{y(most):.1f}" stroke="{GRID}" '
            'stroke-dasharray="3 3"/>',
            _text(left - 6, y(most) + 4, f"{most:.1%}", "end"), _text(left - 6, y(0) + 4, "0%", "end")]
    for i, name in enumerate(names):
        body.append(_text(x(i), height - 6, name, "middle"))
    for n, (what, vs) in enumerate(series.items()):
        colour = SERIES[n % len(SERIES)]
        body.append(_text(left + n * 150, 12, f"■ {what}", "start", colour, 12))
        run: list[str] = []
        for i, v in enumerate([*vs, None]):
            if v is None:
                if len(run) > 1:
                    body.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="2"/>')
                run = []
                continue
            run.append(f"{x(i):.1f},{y(v):.1f}")
            body.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}">'
                        f'<title>{escape(names[i])}: {escape(what)} {v:.2%}</title></circle>')
    return _svg(height, label, body)
