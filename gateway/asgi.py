"""The gateway as an ASGI app built from the environment, for servers that start their own
worker processes:

    PROMETHEUS_MULTIPROC_DIR=/run/gateway-metrics \\
        uvicorn --factory gateway.asgi:app_from_environment --workers 4 --host 0.0.0.0 --port 8000

Every worker reads the same GATEWAY_* settings and opens the same database. Run
``gateway migrate`` once before, and start with an empty PROMETHEUS_MULTIPROC_DIR (see
README.md, "Operations"). ``gateway serve`` remains the one-process way, with the built-in
simulator when no WaveSpeed key is set; here a key is required.
"""

from __future__ import annotations

from starlette.applications import Starlette

from gateway.app import create_app
from gateway.settings import load_settings


def app_from_environment() -> Starlette:
    return create_app(load_settings())
