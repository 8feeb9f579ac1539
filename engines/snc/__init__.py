"""Stem-Native Codec (SNC): stems + a mastering residual in one Matroska file (docs/snc.md).

``encode`` writes a file; ``SncReader`` validates and decodes it block by block. Only PyAV,
numpy and soundfile are needed; nothing here imports torch.
"""

from engines.snc.encode import encode
from engines.snc.manifest import FORMAT_VERSION, LIMITS, MODES, Manifest, StemInfo
from engines.snc.reader import SncReader

__all__ = ["FORMAT_VERSION", "LIMITS", "MODES", "Manifest", "SncReader", "StemInfo", "encode"]
