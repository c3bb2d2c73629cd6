"""Replay: deterministic replay, time travel, the replay server, import and export."""
