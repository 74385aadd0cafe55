"""The canonical skeleton every library phrase is stored on.

Source takes (BVH/FBX, any rig) are mapped onto these joints by a bone map; the user's armature
is driven from them by :mod:`blender_m2d.retarget`. Coordinates of stored motion are Blender world
space: metres, +Z up, the character initially facing -Y (what Blender's BVH importer produces).
"""

from __future__ import annotations

CANON_JOINTS: tuple[str, ...] = (
    "Hips",            # 0 root
    "Spine",           # 1
    "Chest",           # 2
    "Neck",            # 3
    "Head",            # 4
    "LeftShoulder",    # 5
    "LeftUpperArm",    # 6
    "LeftLowerArm",    # 7
    "LeftHand",        # 8
    "RightShoulder",   # 9
    "RightUpperArm",   # 10
    "RightLowerArm",   # 11
    "RightHand",       # 12
    "LeftUpperLeg",    # 13
    "LeftLowerLeg",    # 14
    "LeftFoot",        # 15
    "LeftToes",        # 16
    "RightUpperLeg",   # 17
    "RightLowerLeg",   # 18
    "RightFoot",       # 19
    "RightToes",       # 20
)
"""Joint names in storage order; index 0 is the root."""

CANON_PARENTS: tuple[int, ...] = (
    -1, 0, 1, 2, 3,
    2, 5, 6, 7,
    2, 9, 10, 11,
    0, 13, 14, 15,
    0, 17, 18, 19,
)
"""Parent index of each joint in :data:`CANON_JOINTS` (-1 for the root)."""

JOINT_INDEX = {name: i for i, name in enumerate(CANON_JOINTS)}
FEET = (JOINT_INDEX["LeftFoot"], JOINT_INDEX["RightFoot"])
TOES = (JOINT_INDEX["LeftToes"], JOINT_INDEX["RightToes"])
ROOT = 0
