"""The leakage checks now live in :mod:`tailmix.io.leakage` (the bottom layer, so generators need not import the
env package); this module re-exports them for code written against earlier versions."""
from tailmix.io.leakage import (MAX_EXAMPLES, format_leakage_report, leakage_report, near_copies,  # noqa: F401
                                nearest_real, pixel_hashes)

__all__ = ["MAX_EXAMPLES", "format_leakage_report", "leakage_report", "near_copies", "nearest_real", "pixel_hashes"]
