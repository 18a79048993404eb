"""The package version (one definition; `lift3d.__version__` re-exports it)."""

__version__ = "0.1.0"
