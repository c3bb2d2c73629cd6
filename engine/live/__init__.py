"""The live capture runtime (trio): connections, REST snapshots, orchestration, status, dashboard, ``engine run``.

Not part of the pure core: this package does the I/O the core's outputs ask for.
"""
