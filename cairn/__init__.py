"""Cairn's core: the journey language, conditions, time, templates, store, channels, settings,
the event pipeline (`cairn.events`) and the simulator (`cairn.simulation`).

The core imports nothing above it (`workflows`, `activities`, `starter`); tests/architecture
checks it. Modules at this level are importable from workflow code, so they stay free of I/O at
import time; the store, the channel adapters, the event pipeline and the simulator live in
subpackages that only activities and doors import.
"""

__version__ = "0.1.0"
