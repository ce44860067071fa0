"""Cairn's shared core: the journey language, conditions, time, templates, store and settings.

Everything here is importable from workflow code, so modules at this level stay free of I/O at
import time; the store and the channel adapters live in subpackages that only activities and
starters import.
"""

__version__ = "0.1.0"
