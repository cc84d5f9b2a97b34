"""nginx.conf as a front end onto `config/schema.py`: crossplane parses (`syntax.py`), one
directive table (`directives.py`) says where each directive may appear and which
function translates it (`core.py`, `proxy.py`, `upstream.py`, `rewrite.py`), and
`freeze.py` applies nginx's defaults and inheritance to build the frozen `Config`.

Nothing here runs anything: the result is the same data a native YAML file gives.
"""

from __future__ import annotations

from ferryman.config.nginx.translate import load_nginx

__all__ = ["load_nginx"]
