"""The embedded exchange simulator: a deterministic market model, its WebSocket + REST server, ``engine simulate``.

Read in data-flow order: ``instruments`` (symbol grids) → ``model`` (order flow,
book, candles; pure) → ``binance_frames`` (the model's events as Binance
frames) → ``server`` (the pump, REST routes; joins the rest) over
``transport`` + ``connection`` (HTTP / WebSocket on trio), ``binance`` (the
venue's paths, control replies, errors) and ``faults``; ``cli`` is the front
door.  Not part of the pure core (the server does I/O); the model is pure.
"""
