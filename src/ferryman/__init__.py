"""Ferryman: a reverse proxy, load balancer and forward proxy in Python."""

import os as _os

from ferryman._accel import select_implementation as _select
from ferryman._lib_accel import select as _select_libraries

__version__ = "0.1.0"
__all__ = ["__version__"]

# Must run before any hot-path module is imported: it decides between the mypyc build
# and the sources (see _accel.py).
_select(_os.path.dirname(__file__))
# Likewise before h2 is imported: the Cython build of the HTTP/2 libraries, made beside
# a source checkout (see _lib_accel.py).
_select_libraries()
