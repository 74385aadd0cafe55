"""blender_m2d: choreograph a dance to any song from a studio's own mocap library.

This package is both a Blender extension (``register``/``unregister`` below) and a plain Python
package whose ``core`` subpackage runs without Blender. Importing ``blender_m2d`` never imports
``bpy``: the bpy layer is imported inside :func:`register`.
"""

from __future__ import annotations

__version__ = "0.1.0"

_UI_MODULES = ("preferences", "props", "operators", "panels")


def _ui_modules():
    import importlib

    mods = []
    for name in _UI_MODULES:
        try:
            mods.append(importlib.import_module(f"{__name__}.{name}"))
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    return mods


def register() -> None:
    """Blender entry point: register properties, operators and panels."""
    for module in _ui_modules():
        module.register()


def unregister() -> None:
    """Blender entry point: unregister in reverse order."""
    for module in reversed(_ui_modules()):
        module.unregister()
