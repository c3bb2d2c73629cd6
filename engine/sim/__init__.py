"""The embedded exchange simulator: a deterministic market model, its WebSocket + REST server, ``engine simulate``.

Not part of the pure core (the server does I/O); the model itself is pure.
"""
