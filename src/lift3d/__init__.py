"""lift3d: 3D medical image synthesis with 2D slice models and light inter-slice trajectory models.

Implements LiFT ("Lifted Inter-slice Feature Trajectories for 3D Image Generation from 2D
Generators", Zhang et al., arXiv 2605.19060, 2026) as a library and a command-line tool.

Public API kept small and stable:

    >>> import lift3d
    >>> vol = lift3d.read_volume("case/mr.nii.gz")
    >>> lift3d.write_volume(vol, "copy.nii.gz")
"""

from __future__ import annotations

from lift3d.data.volume import Volume, read_volume, write_volume  # noqa: E402
from lift3d.errors import InputError  # noqa: E402
from lift3d.version import __version__  # noqa: E402

__all__ = ["InputError", "Volume", "__version__", "read_volume", "write_volume"]
