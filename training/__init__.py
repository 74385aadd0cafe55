"""Training for blender_m2d: the paper's two-stage + co-ascent pipeline (never imports bpy).

``python -m training <step>`` with steps prepare, pretrain, classify, coascent, evaluate,
export, ablation and bundled; see docs/training.md.
"""
