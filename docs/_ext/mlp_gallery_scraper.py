"""A sphinx-gallery image scraper for the Figures mlp.plots returns.

mlp.plots builds ``matplotlib.figure.Figure`` objects without pyplot, so
sphinx-gallery's own matplotlib scraper, which asks pyplot for its open
figures, never sees them. This one looks for Figures among the example's
global names after each code block and saves each new one once.
"""
from __future__ import annotations

from pathlib import PurePosixPath


class FigureScraper:
    def __init__(self):
        self._seen = {}

    def __repr__(self):
        # sphinx-gallery keys its cache on the repr of its configuration.
        return "mlp_gallery_scraper.FigureScraper()"

    def __call__(self, block, block_vars, gallery_conf):
        from matplotlib.figure import Figure
        from sphinx_gallery.scrapers import figure_rst

        src = block_vars["src_file"]
        seen = self._seen.setdefault(src, set())
        images = []
        for value in list(block_vars["example_globals"].values()):
            if isinstance(value, Figure) and id(value) not in seen:
                seen.add(id(value))
                path = next(block_vars["image_path_iterator"])
                value.savefig(path, dpi=80)
                images.append(path)
        return figure_rst(images, gallery_conf["src_dir"])

    def __deepcopy__(self, memo):
        return self
