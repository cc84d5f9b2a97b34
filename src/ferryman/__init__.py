"""Ferryman: a reverse proxy, load balancer and forward proxy in Python."""

__version__ = "0.1.0"
__all__ = ["__version__"]
