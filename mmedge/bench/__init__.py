"""mmedge bench: latency on the host (measured), on a phone through adb (measured), or modelled
from a device profile (labelled "modelled")."""
