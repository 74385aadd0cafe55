"""Subcommands of the ``m2d`` CLI, one module each.

A command module defines ``NAME`` (str), ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. :mod:`blender_m2d.cli` discovers them; adding a command needs no edit
elsewhere. Modules import heavy dependencies (librosa, bpy, onnxruntime) inside ``run``.
"""
