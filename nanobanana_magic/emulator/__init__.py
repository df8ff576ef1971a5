"""A local, faithful fake of the NanoBanana REST API, for tests, demos and offline work.

    from nanobanana_magic.emulator import Emulator
    with Emulator(latency=0.1) as emu:
        ...  # point a client at emu.base_url

It imports nothing from the rest of ``nanobanana_magic``: it is the oracle the package is
tested against, so it keeps its own validation. Pillow is only imported once an image
is drawn. Run ``python -m nanobanana_magic.emulator --help`` for the command line.
"""

from .faults import KINDS, PHASES, Fault, parse_fault
from .options import Options
from .realism import DEFAULT_MEDIANS, LognormalDurations
from .records import Stats
from .server import Emulator
from .tasks import COSTS

__all__ = [
    "COSTS",
    "DEFAULT_MEDIANS",
    "KINDS",
    "PHASES",
    "Emulator",
    "Fault",
    "LognormalDurations",
    "Options",
    "Stats",
    "parse_fault",
]
