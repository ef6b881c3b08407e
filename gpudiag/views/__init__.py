"""Views rendered from a report alone: HTML, Markdown and terminal (render.py, templates/), inline
SVG charts (charts.py), side-by-side comparison (compare.py), the environment summary (env_summary.py)."""
