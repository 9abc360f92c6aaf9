"""``make bench``: the gateway's cost against a bare Starlette + pydantic app, the full job
cycle against the simulator, the store's group commit and the upstream HTTP transports.

Each server runs in its own process on CPU 0 and the load generator on CPU 1; see
``bench.__main__`` for what is measured, and the README's "Benchmarks" section.
"""
