"""convdoctor: finds what is wrong with a PyTorch CNN before production does.

The public surface is exactly ``__all__``; everything else is internal.
"""

__version__ = "0.1.0"

from .api import inspect
from .audit import audit
from .bench import bench, compare
from .check_api import check
from .findings import Finding, Severity
from .monitor import Monitor
from .rf_api import receptive_field

__all__ = [
    "Finding",
    "Monitor",
    "Severity",
    "__version__",
    "audit",
    "bench",
    "check",
    "compare",
    "inspect",
    "receptive_field",
]
