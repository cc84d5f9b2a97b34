"""Several Ferryman instances sharing rate limits, cache and peer health through one
Redis (docs/cluster.md).

One `ClusterAgent` per worker (agent.py) owns the Redis connection (client.py) and the
three shared parts: limit zones marked `shared` (limiter.py, behind the filters'
SharedZones interface), cache zones marked `shared` (cache.py, a tier behind the zone's
store) and peer health (health.py, pub/sub into health/shared.py's table). Redis is
never on the request path unbounded: every call has ClusterSpec.timeout, and while
Redis is unreachable every decision is the local one. url.py (pure) parses the address.
Nothing here imports redis at package import; config loading only needs url.py.
"""
