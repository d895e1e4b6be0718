"""Server-drawn SVG for the dashboard (the CSP allows no inline script and no external chart library)."""

from __future__ import annotations

import datetime as dt

from markupsafe import Markup, escape

WIDTH = 360
HEIGHT = 80
LABEL_SPACE = 14


def per_day_svg(per_day: list[tuple[dt.date, int]]) -> Markup:
    """A bar per calendar day from the first to the last day given (gaps drawn as empty days).

    Args:
        per_day: ``(day, predictions)`` sorted by day.

    Returns:
        An ``<svg>`` element with a ``<title>`` per bar (the browser shows it on hover).
    """
    if not per_day:
        return Markup('<svg class="per-day-chart" width="%d" height="%d" role="img" aria-label="no data"></svg>'
                      % (WIDTH, HEIGHT))
    counts = dict(per_day)
    first, last = per_day[0][0], per_day[-1][0]
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    peak = max(counts.values())
    slot = WIDTH / len(days)
    plot = HEIGHT - LABEL_SPACE
    bars = []
    for i, day in enumerate(days):
        n = counts.get(day, 0)
        height = plot * n / peak if peak else 0
        bars.append(f'<rect x="{i * slot + 1:.1f}" y="{plot - height:.1f}" width="{max(slot - 2, 1):.1f}" '
                    f'height="{height:.1f}"><title>{escape(day.isoformat())}: {n}</title></rect>')
    axis = (f'<text x="0" y="{HEIGHT - 2}" fill="#6c757d">{escape(first.isoformat())}</text>'
            f'<text x="{WIDTH}" y="{HEIGHT - 2}" text-anchor="end" fill="#6c757d">{escape(last.isoformat())}</text>')
    return Markup(f'<svg class="per-day-chart" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
                  f'fill="#0d6efd" font-size="10" role="img" aria-label="predictions per day, peak {peak}">{"".join(bars)}{axis}</svg>')
