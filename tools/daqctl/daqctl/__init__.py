"""daqctl — start, stop and join runs of one or several daqd servers.

Library use (scripts, Bluesky/ophyd-style devices)::

    from daqctl import Cluster, Host
    c = Cluster.from_file("hosts.toml", master_dir="/data/runs")
    r = c.start("beam01", meta={"sample": "Si", "energy_keV": 12.4})   # two-phase
    print(r.skew_s, r.master)
    s = c.stop()                 # StopResult: per host answers, .problems, .master
    if not s.ok:
        raise RuntimeError("\\n".join(s.problems))

The control part (client, cluster) uses the standard library only; writing
master files (daqctl.master) imports h5py when it is first needed.
"""

__version__ = "0.1.0"

from .client import DaqctlError, Host, HostError, name_safe  # noqa: E402
from .cluster import LOSS_FIELDS, Cluster, StartError, StartResult, StopResult  # noqa: E402

__all__ = ["Cluster", "Host", "DaqctlError", "HostError", "StartError", "StartResult", "StopResult",
           "LOSS_FIELDS", "name_safe", "__version__"]
