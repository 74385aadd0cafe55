"""bpy-free core of blender_m2d: audio analysis, dance library, inference, decoding, metrics.

Never imports ``bpy`` or ``torch`` (a test guards this). Heavy dependencies (librosa,
onnxruntime) are imported by the submodules that need them, not here.
"""

from .errors import M2DError

__all__ = ["M2DError"]
