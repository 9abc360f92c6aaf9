"""A faithful in-memory stand-in for WaveSpeed's API, for ``gateway dev`` and the tests.

Same paths, envelope, statuses and v3-signed webhooks as WaveSpeed, placeholder PNG outputs,
and fault knobs (``Faults``) for every way the real service can misbehave.
"""

from gateway.simulator.app import SimulatedDisconnect, create_simulator_app
from gateway.simulator.config import FaultError, Faults, SimulatorConfig
from gateway.simulator.png import render_png
from gateway.simulator.state import SimulatorState

__all__ = [
    "FaultError",
    "Faults",
    "SimulatedDisconnect",
    "SimulatorConfig",
    "SimulatorState",
    "create_simulator_app",
    "render_png",
]
