"""The one compatibility layer for Blender's Action API (4.2 LTS, 4.4/4.5 LTS, 5.0).

Blender 4.4 introduced *slotted* (layered) Actions: F-curves live in a channelbag per slot inside a
keyframe strip of a layer, and ``AnimData``/``NlaStrip`` carry an ``action_slot`` as well as an
``action``. 5.0 removed the legacy ``Action.fcurves``. 4.2 has no slots at all. Code elsewhere in
blender_m2d calls only these helpers and never checks versions itself:

* :func:`new_action` -- an Action with one fixed slot (``"Dance"`` -> identifier ``"OBDance"``);
* :func:`action_fcurves` / :func:`ensure_fcurve` -- the F-curve collection of a slot;
* :func:`assign_action` -- set ``action`` *and* its slot on an ``AnimData`` or an ``NlaStrip``;
* :func:`action_slot_of` -- the slot assigned to an ``AnimData``/``NlaStrip`` (None on 4.2).

Verified on bpy 5.0.1 (tests/blender/test_retarget.py); the 4.2/4.5 branches follow the
documented APIs of those versions (feature detection, not version numbers).
"""

from __future__ import annotations

import bpy

SLOT_NAME = "Dance"
"""Slot name of every Action blender_m2d creates (identifier ``"OB" + SLOT_NAME``)."""


def has_slots() -> bool:
    """True on Blender 4.4+ (slotted Actions)."""
    return "slots" in bpy.types.Action.bl_rna.properties


def _anim_utils():
    try:
        from bpy_extras import anim_utils
    except ImportError:                       # pragma: no cover - always present in Blender
        return None
    return anim_utils


def new_action(name: str, *, slot_name: str = SLOT_NAME, id_type: str = "OBJECT"):
    """Create an Action and its slot: ``(action, slot)``; ``slot`` is None on 4.2."""
    action = bpy.data.actions.new(name)
    return action, ensure_slot(action, slot_name=slot_name, id_type=id_type)


def ensure_slot(action, *, slot_name: str = SLOT_NAME, id_type: str = "OBJECT"):
    """The action's slot named ``slot_name`` (created if needed); None on 4.2."""
    if not has_slots():
        return None
    for slot in action.slots:
        if getattr(slot, "name_display", None) == slot_name and slot.target_id_type == id_type:
            return slot
    return action.slots.new(id_type=id_type, name=slot_name)


def first_slot(action):
    """The action's first slot, or None (4.2, or an action without slots)."""
    if not has_slots() or len(action.slots) == 0:
        return None
    return action.slots[0]


def _channelbag(action, slot, *, create: bool):
    au = _anim_utils()
    fn_name = "action_ensure_channelbag_for_slot" if create else "action_get_channelbag_for_slot"
    fn = getattr(au, fn_name, None) if au is not None else None
    if fn is not None:
        return fn(action, slot)
    # 4.4 without the anim_utils helpers: one layer with one keyframe strip
    if len(action.layers) == 0:
        if not create:
            return None
        layer = action.layers.new("Layer")
        layer.strips.new(type="KEYFRAME")
    strip = action.layers[0].strips[0]
    return strip.channelbag(slot, ensure=create)


def action_fcurves(action, slot=None, *, create: bool = True):
    """The F-curve collection for ``slot`` (4.4+) or the action's curves (4.2).

    Returns None when ``create`` is False and the slot has no channelbag yet.
    """
    if not has_slots():
        return action.fcurves
    if slot is None:
        slot = first_slot(action)
        if slot is None:
            if not create:
                return None
            slot = ensure_slot(action)
    bag = _channelbag(action, slot, create=create)
    return None if bag is None else bag.fcurves


def ensure_fcurve(action, slot, data_path: str, index: int = 0, *, group: str | None = None):
    """Find or create the F-curve ``data_path[index]`` of ``slot``."""
    fcurves = action_fcurves(action, slot, create=True)
    fc = fcurves.find(data_path, index=index)
    if fc is not None:
        return fc
    if not has_slots():                        # 4.2: Action.fcurves.new(action_group=...)
        return fcurves.new(data_path, index=index, action_group=group or "")
    if group:
        try:                                   # 5.0: ChannelBag fcurves.new(group_name=...)
            return fcurves.new(data_path, index=index, group_name=group)
        except TypeError:                      # 4.4/4.5: no group_name keyword
            pass
    fc = fcurves.new(data_path, index=index)
    if group:
        _set_group(fcurves, fc, group)
    return fc


def _set_group(fcurves, fc, group: str) -> None:
    """Put ``fc`` in the channel group ``group`` of its channelbag where the API allows it
    (4.4/4.5: ``channelbag.groups`` + ``FCurve.group``); a missing group is cosmetic only."""
    bag = getattr(fcurves, "data", None)       # the collection's owner: the channelbag
    groups = getattr(bag, "groups", None)
    if groups is None:
        return
    try:
        grp = groups.get(group) if hasattr(groups, "get") else None
        if grp is None:
            grp = groups.new(group)
        fc.group = grp
    except (AttributeError, TypeError, RuntimeError, ValueError):
        pass


def assign_action(target, action, slot=None) -> None:
    """Assign ``action`` and its slot to an ``AnimData`` or ``NlaStrip``.

    ``slot`` defaults to the action's first slot. Setting only ``action`` leaves the slot unset
    on 4.4+ unless the identifiers happen to match, which animates nothing.
    """
    if target.action != action:
        target.action = action
    if action is None or not has_slots():
        return
    slot = slot or first_slot(action)
    if slot is not None and getattr(target, "action_slot", None) != slot:
        target.action_slot = slot


def action_slot_of(target):
    """The slot an ``AnimData``/``NlaStrip`` uses, or None (4.2, or nothing assigned)."""
    return getattr(target, "action_slot", None) if has_slots() else None
