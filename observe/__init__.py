"""observe: observability and drift monitoring for Mixture-of-Experts language models."""

from observe.errors import ObserveError

__version__ = "0.1.0"

__all__ = ["ObserveError", "__version__"]
