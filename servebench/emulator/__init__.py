"""A local streaming server that speaks each engine's wire format on known token deadlines,
and logs when it really wrote every token: the ground truth for load-generator accuracy."""

from servebench.emulator.core import EmulatorConfig
from servebench.emulator.handle import EmulatorError, EmulatorHandle, held, read_log, start_emulator

__all__ = ["EmulatorConfig", "EmulatorError", "EmulatorHandle", "held", "read_log", "start_emulator"]
