"""Add-on preferences: where the studio keeps its dance library and model, and the default
device. A scene's own settings (``Scene.m2d``) override them; empty fields fall back to these,
then to what ships inside the extension (``assets/library``, ``assets/model``)."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

PACKAGE = __package__
ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLED_LIBRARY = ASSETS / "library"
BUNDLED_MODEL = ASSETS / "model"

DEVICE_ITEMS = (
    ("AUTO", "Auto", "The GPU (CUDA) when onnxruntime has it, else the CPU", 1),
    ("CPU", "CPU", "Always the CPU", 2),
    ("GPU", "GPU", "CUDA; fails when onnxruntime cannot use it", 3),
)


class M2D_Preferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    library_dir: StringProperty(
        name="Dance Library", subtype="DIR_PATH",
        description="Folder of the studio's dance library (library.json); empty: the library "
                    "bundled with the extension")
    model_dir: StringProperty(
        name="Model", subtype="DIR_PATH",
        description="Folder with model.onnx and model.json trained for that library; empty: "
                    "the bundled model, or the rhythm/energy baseline when there is none")
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="AUTO",
                         description="Where the model runs")

    def draw(self, context):
        col = self.layout.column()
        col.prop(self, "library_dir")
        col.prop(self, "model_dir")
        col.prop(self, "device")
        col.label(text=f"Bundled library: {BUNDLED_LIBRARY}", icon="INFO")


def get_prefs(context=None):
    """This add-on's preferences, or None when it runs unregistered as an add-on (e.g. a
    script that calls ``blender_m2d.register()`` directly)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(PACKAGE) if context.preferences else None
    return addon.preferences if addon is not None else None


classes = (M2D_Preferences,)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
