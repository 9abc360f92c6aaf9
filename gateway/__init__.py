"""Kontext Gateway: a multi-tenant gateway in front of WaveSpeed's FLUX.1 Kontext models."""

__all__ = ["create_app"]


def __getattr__(name: str) -> object:
    # Imported lazily so that `gateway.cli` and the simulator do not pull in the web app.
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    raise AttributeError(name)
