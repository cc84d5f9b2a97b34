"""TLS: SSLContext builders (contexts.py), SNI selection (sni.py), the server-side TLS
layer of a listener (server.py), TLS connects to upstreams (client.py), the TLS
variables (info.py) and development certificates (devcert.py)."""
