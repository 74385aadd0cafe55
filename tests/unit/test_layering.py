"""Dependencies go one way: core never imports bpy or torch (see docs/design.md)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import blender_m2d.core as core

CORE_MODULES = sorted(
    f"blender_m2d.core.{m.name}" for m in pkgutil.iter_modules(core.__path__))


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_without_bpy_or_torch(module):
    code = ("import sys; sys.modules.update(bpy=None, torch=None, mathutils=None); "
            f"import {module}")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_imports_without_bpy():
    code = "import sys; sys.modules.update(bpy=None); import blender_m2d, blender_m2d.cli"
    subprocess.run([sys.executable, "-c", code], check=True)
