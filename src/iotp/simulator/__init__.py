"""Fleet simulator: many instances of the device firmware on simulated hardware."""

from iotp.simulator.fleet import Fleet, SimulatorError, node_ids, run_simulation

__all__ = ["Fleet", "SimulatorError", "node_ids", "run_simulation"]
