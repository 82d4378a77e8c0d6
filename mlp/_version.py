"""mlp's version, in a module of its own at the bottom of the package, so
that any module may name it without importing the package above it (and so
that the build reads it without importing mlp: see pyproject.toml)."""

__version__ = "0.3.0"
