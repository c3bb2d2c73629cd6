"""wiretape: record exchange market-data WebSocket streams frame by frame, replay them exactly.

Import everything through ``engine.…``: ``engine.codecs``, ``engine.journal``
and ``engine.replay`` are installed from the top-level folders ``codecs/``,
``journal/`` and ``replay/`` (see pyproject.toml).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
