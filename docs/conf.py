"""Sphinx configuration of mlp's documentation site.

Build (offline, warnings are errors):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The build imports ``mlp`` from the checkout (build it in place first with
``python setup.py build_ext --inplace``) or from the installed package.
"""
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# The checkout's mlp first when its core is built in place (python setup.py
# build_ext --inplace, or pip install -e), so that the pages describe the code
# next to them; otherwise the installed mlp.
if any((ROOT / "mlp").glob("_kernels.*.so")) or any((ROOT / "mlp").glob("_kernels.*.pyd")):
    sys.path.insert(0, str(ROOT))
else:
    # `python -m sphinx` run from the checkout puts it first on sys.path, where its mlp,
    # whose core is not built, would hide the installed one (CI builds the site that way).
    sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != ROOT]
sys.path.insert(0, str(DOCS / "_ext"))

import mlp  # noqa: E402
from mlp_gallery_scraper import FigureScraper  # noqa: E402

project = "mlp"
author = "the mlp developers"
copyright = "the mlp developers"
release = mlp.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "mlp_apicheck",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/GALLERY_HEADER.rst"]

# No network at build time: no intersphinx inventories are fetched.
intersphinx_mapping = {}

autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"
autodoc_member_order = "bysource"
# The class template lists the members itself; numpydoc's own member tables
# would make a second, toctree-less list.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "pydata_sphinx_theme"
html_title = f"mlp {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "github_url": None,
}
html_show_sourcelink = False

# The gallery: scripts in examples/ run when the site is built; their figures
# go into the pages. MLP_DOCS_QUICK is set for them so that they take their
# small-data path (they are small already; the variable is for scripts that
# have a longer version).
os.environ.setdefault("MPLBACKEND", "Agg")
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib", FigureScraper()),
    "reference_url": {},
    "show_memory": False,
    "abort_on_example_error": True,
}


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn's metadata-routing setters (set_fit_request, ...) are made
    # for every estimator; their docstrings point into scikit-learn's own site.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
