"""privbench: the defense x attack matrix for privacy protections of data sent to untrusted ML parties.

Importing this package is cheap on purpose: no plugin and no torch-heavy module is loaded until a
command needs it.
"""

__version__ = "0.1.0"

from privbench.hookspecs import hookimpl  # noqa: E402  (pluggy only: still cheap)

__all__ = ["__version__", "hookimpl"]
