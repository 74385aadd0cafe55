"""Render the Dance panel's layout tree to a readable text and PNG mock (no GPU needed).

Blender 5's UI cannot be drawn headless, so this draws the add-on's real panels
(``blender_m2d.panels``) into :class:`RecordingLayout`, a stand-in for ``bpy.types.UILayout``
that records every call, then lays the recorded tree out as text (``docs/ui_panel.txt``) and
as an image in Blender's default dark theme (``docs/ui_panel.png``). The scene it draws is made
by the real operators: the fixture song choreographed on a test armature, phrase 3 swapped to
its 2nd-ranked alternative, phrase 1 locked.

    .venv/bin/python tools/render_panel_mock.py            # writes docs/ui_panel.txt + .png
    .venv/bin/python tools/render_panel_mock.py --check    # fails if the .txt is out of date

:class:`RecordingLayout` is also what ``tests/blender/test_ui_panels.py`` draws into.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SONG = REPO / "data" / "songs" / "kevin_macleod_vibe_ace.ogg"
SONG_SECONDS = 24.0                    # the first 24 s: six phrases
CONTAINERS = ("row", "column", "box", "split", "column_flow", "grid_flow")
PANEL_WIDTH = 46                       # characters of the text mock (a ~300 px sidebar)


# =========================================================================== recorder
class OpProps:
    """What ``layout.operator()`` returns: records the properties a panel sets on it."""

    def __init__(self, idname: str) -> None:
        object.__setattr__(self, "idname", idname)
        object.__setattr__(self, "props", {})

    def __setattr__(self, name, value) -> None:
        self.props[name] = value

    def __getattr__(self, name):
        props = object.__getattribute__(self, "props")
        if name in props:
            return props[name]
        raise AttributeError(name)


class RecordingLayout:
    """Fake ``UILayout``: every call is logged flat (``log``: ``(path, method, args, kwargs)``)
    and kept as a tree (``items``) for rendering. Containers return child recorders,
    ``operator``/``operator_menu_enum`` return :class:`OpProps`, attribute sets (``alert``,
    ``active``, ``scale_y``...) are recorded as ``set:<name>``."""

    def __init__(self, kind: str = "root", log: list | None = None, path: str = "layout",
                 kwargs: dict | None = None) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "log", [] if log is None else log)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "kwargs", kwargs or {})
        object.__setattr__(self, "items", [])
        object.__setattr__(self, "attrs", {})

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args, **kw):
            self.log.append((self.path, name, args, kw))
            if name in CONTAINERS:
                child = RecordingLayout(name, self.log, f"{self.path}.{name}", kw)
                self.items.append(("layout", child, (), {}))
                return child
            if name in ("operator", "operator_menu_enum"):
                props = OpProps(args[0] if args else kw.get("operator", ""))
                self.items.append((name, props, args, kw))
                return props
            self.items.append((name, None, args, kw))
            return None

        return call

    def __setattr__(self, name, value) -> None:
        self.log.append((self.path, "set:" + name, (value,), {}))
        self.attrs[name] = value

    # ---- queries used by tests
    def calls(self, method: str) -> list[tuple]:
        return [c for c in self.log if c[1] == method]

    def operators(self) -> list[tuple[str, dict]]:
        """``(idname, properties)`` of every operator button, in drawing order."""
        out = []

        def walk(node):
            for kind, obj, _args, _kw in node.items:
                if kind == "layout":
                    walk(obj)
                elif kind in ("operator", "operator_menu_enum"):
                    out.append((obj.idname, dict(obj.props)))
        walk(self)
        return out

    def texts(self) -> list[str]:
        """Every ``text=`` shown (labels, buttons, progress)."""
        return [c[3]["text"] for c in self.log if "text" in c[3] and c[1] != "prop"]


class FakePanel:
    """Stands in for a Panel instance: ``Panel.draw(FakePanel(), context)``."""

    def __init__(self) -> None:
        self.layout = RecordingLayout()


def draw_panel(panel_cls, context) -> RecordingLayout:
    fake = FakePanel()
    panel_cls.draw(fake, context)
    return fake.layout


# =========================================================================== layout to lines
ICONS = {"ERROR": "(!)", "INFO": "(i)", "LOCKED": "[L]", "UNLOCKED": "[ ]", "PLAY": ">",
         "PLAY_SOUND": ">", "CANCEL": "x", "TIME": "@", "CHECKMARK": "v", "EXPORT": "^",
         "FILE_REFRESH": "~", "BOOKMARKS": "#", "TRASH": "-", "EYEDROPPER": "/", "SOUND": "",
         "IPO_EASE_IN_OUT": "", "TRIA_DOWN": "v", "TRIA_RIGHT": ">", "BLANK1": ""}


@dataclass
class Seg:
    kind: str            # label | button | field | toggle | menu | progress | list
    text: str
    depress: bool = False
    disabled: bool = False
    alert: bool = False
    factor: float = 0.0
    active_row: bool = False


@dataclass
class Line:
    segs: list[Seg]
    depth: int = 0       # box nesting
    heading: str = ""    # panel header line
    list_row: bool = False
    box_edge: str = ""   # "top" / "bottom" for box borders
    extra: dict = field(default_factory=dict)


def _icon(kw) -> str:
    glyph = ICONS.get(kw.get("icon", ""), "")
    return glyph


def _op_label(idname: str) -> str:
    import bpy

    mod, _, name = idname.partition(".")
    try:
        return getattr(getattr(bpy.ops, mod), name).get_rna_type().name
    except (AttributeError, KeyError):
        return idname


def _op_enabled(idname: str, props: dict) -> bool:
    import bpy

    mod, _, name = idname.partition(".")
    try:
        return bool(getattr(getattr(bpy.ops, mod), name).poll())
    except (AttributeError, RuntimeError):
        return True


def _prop_seg(data, prop: str, kw: dict) -> list[Seg]:
    rna = data.bl_rna.properties[prop]
    name = kw.get("text", rna.name)
    value = getattr(data, prop)
    if rna.type == "BOOLEAN":
        if "icon" in kw and name == "":
            return [Seg("toggle", _icon(kw) or ("[x]" if value else "[ ]"), depress=value)]
        if kw.get("emboss") is False and "icon" in kw:
            return [Seg("label", f"{_icon(kw)} {name}".strip())]
        return [Seg("toggle", f"[{'x' if value else ' '}] {name}".rstrip(), depress=value)]
    if rna.type == "ENUM":
        items = {e.identifier: e.name for e in rna.enum_items}
        shown = items.get(value, value)
        segs = [Seg("label", name)] if name else []
        return [*segs, Seg("menu", f"{shown} v")]
    if rna.type == "POINTER":
        segs = [Seg("label", name)] if name else []
        return [*segs, Seg("field", f"{value.name if value else '-'}")]
    if rna.type == "STRING":
        text = value
        if rna.subtype in ("FILE_PATH", "DIR_PATH"):
            text = Path(value).name or value if value else ""
            text = f"{text or '(default)'}  [..]"
        segs = [Seg("label", name)] if name else []
        return [*segs, Seg("field", text)]
    if rna.type == "FLOAT":
        return ([Seg("label", name)] if name else []) + [Seg("field", f"{value:.3g}")]
    return ([Seg("label", name)] if name else []) + [Seg("field", str(value))]


def layout_lines(node: RecordingLayout, context, depth: int = 0) -> list[Line]:
    """The recorded tree as lines of segments (rows put their items side by side)."""
    import bpy

    lines: list[Line] = []
    horizontal = node.kind in ("row", "split")
    alert = bool(node.attrs.get("alert"))
    inactive = node.attrs.get("active") is False or node.attrs.get("enabled") is False

    def mark(segs):
        for s in segs:
            s.alert = s.alert or alert
            s.disabled = s.disabled or inactive
        return segs

    if horizontal:
        segs: list[Seg] = []
        extra_lines: list[Line] = []
        for kind, obj, args, kw in node.items:
            if kind == "layout":
                sub = layout_lines(obj, context, depth)
                if obj.kind in ("row", "split"):
                    for ln in sub:
                        segs += ln.segs
                else:
                    extra_lines += sub
            else:
                segs += _item_segs(kind, obj, args, kw, context)
        if segs:
            lines.append(Line(mark(segs), depth))
        return lines + extra_lines
    if node.kind == "box":
        lines.append(Line([], depth + 1, box_edge="top"))
        depth += 1
    for kind, obj, args, kw in node.items:
        if kind == "layout":
            lines += layout_lines(obj, context, depth)
        elif kind == "template_list":
            lines += _list_lines(args, kw, context, depth)
        elif kind == "separator":
            lines.append(Line([], depth))
        else:
            segs = _item_segs(kind, obj, args, kw, context)
            if segs:
                lines.append(Line(mark(segs), depth))
    if node.kind == "box":
        lines.append(Line([], depth, box_edge="bottom"))
    del bpy
    return lines


def _item_segs(kind, obj, args, kw, context) -> list[Seg]:
    if kind == "label":
        text = kw.get("text", args[0] if args else "")
        icon = _icon(kw)
        return [Seg("label", f"{icon} {text}".strip() if icon else text,
                    alert=kw.get("icon") == "ERROR")]
    if kind == "prop":
        return _prop_seg(args[0], args[1], kw)
    if kind == "operator":
        text = kw.get("text")
        label = _op_label(obj.idname) if text is None else text
        icon = _icon(kw)
        shown = f"{icon} {label}".strip() if icon else label
        return [Seg("button", shown or "?", depress=bool(kw.get("depress")),
                    disabled=not _op_enabled(obj.idname, obj.props))]
    if kind == "operator_menu_enum":
        return [Seg("menu", f"{kw.get('text', _op_label(args[0]))} v",
                    disabled=not _op_enabled(args[0], {}))]
    if kind == "progress":
        return [Seg("progress", kw.get("text", ""), factor=float(kw.get("factor", 0.0)))]
    return []


def _list_lines(args, kw, context, depth) -> list[Line]:
    import bpy

    list_type, _list_id, data, prop, active_data, active_prop = args[:6]
    cls = getattr(bpy.types, list_type)
    items = getattr(data, prop)
    active = getattr(active_data, active_prop)
    rows = max(int(kw.get("rows", 5)), 1)
    out = [Line([], depth + 1, box_edge="top")]
    for i, item in enumerate(items):
        if i >= rows + 2:
            out.append(Line([Seg("label", f"... {len(items) - i} more (scroll)")], depth + 1,
                            list_row=True))
            break
        rec = RecordingLayout("row")
        cls.draw_item(None, context, rec, data, item, 0, active_data, active_prop, i)
        segs = []
        for ln in layout_lines(rec, context, depth + 1):
            segs += ln.segs
        for s in segs:
            s.active_row = i == active
        out.append(Line(segs, depth + 1, list_row=True, extra={"active": i == active}))
    out.append(Line([], depth + 1, box_edge="bottom"))
    return out


# =========================================================================== text
def seg_text(s: Seg) -> str:
    if s.kind == "label":
        return s.text
    if s.kind == "button":
        t = f"[{s.text}]" if not s.depress else f"[*{s.text}*]"
        return t + ("~" if s.disabled else "")
    if s.kind == "toggle":
        return s.text
    if s.kind == "menu":
        return f"[{s.text}]" + ("~" if s.disabled else "")
    if s.kind == "field":
        return f"[{s.text}]"
    if s.kind == "progress":
        n = 12
        k = round(s.factor * n)
        return f"[{'#' * k}{'.' * (n - k)}] {s.text}"
    return s.text


def lines_text(lines: list[Line]) -> list[str]:
    out = []
    for ln in lines:
        pad = "| " * ln.depth
        if ln.heading:
            out.append(ln.heading)
            continue
        if ln.box_edge == "top":
            out.append("| " * (ln.depth - 1) + "+" + "-" * (PANEL_WIDTH - 2 * ln.depth))
            continue
        if ln.box_edge == "bottom":
            out.append("| " * (ln.depth - 1) + "+" + "-" * (PANEL_WIDTH - 2 * ln.depth))
            continue
        body = "  ".join(seg_text(s) for s in ln.segs)
        if ln.list_row:
            body = (">" if ln.extra.get("active") else " ") + body
        out.append((pad + body).rstrip())
    return out


@dataclass
class PanelDraw:
    title: str
    lines: list[Line]
    closed: bool = False


def panel_sections(context, panels) -> list[PanelDraw]:
    out = []
    for cls in panels:
        rec = draw_panel(cls, context)
        depth = 1 if getattr(cls, "bl_parent_id", "") else 0
        out.append(PanelDraw(("  " * depth) + cls.bl_label, layout_lines(rec, context)))
    return out


def sections_text(title: str, sections: list[PanelDraw]) -> str:
    out = [f"== {title} ==", ""]
    for sec in sections:
        out.append(f"v {sec.title.strip()}".rjust(len(sec.title) + 2) if sec.title.startswith(
            " ") else f"v {sec.title}")
        out += ["  " + x for x in lines_text(sec.lines)]
        out.append("")
    return "\n".join(out)


# =========================================================================== png
THEME = {"bg": (48, 48, 48), "header": (61, 61, 61), "text": (230, 230, 230),
         "dim": (140, 140, 140), "button": (84, 84, 84), "field": (29, 29, 29),
         "depress": (71, 114, 179), "menu": (30, 30, 30), "progress": (71, 114, 179),
         "alert": (179, 71, 71), "box": (40, 40, 40), "edge": (70, 70, 70),
         "active_row": (52, 78, 119), "list": (44, 44, 44)}


def _font(size: int):
    from PIL import ImageFont

    candidates = []
    try:
        import matplotlib

        candidates.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")
    except ImportError:
        pass
    candidates.append(Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"))
    for c in candidates:
        if c.is_file():
            return ImageFont.truetype(str(c), size)
    return ImageFont.load_default(size)


def render_png(columns: list[tuple[str, list[PanelDraw]]], path: Path, *, width: int = 420,
               scale: int = 2) -> None:
    """Draw panels (one column per state) in Blender's default dark theme."""
    from PIL import Image, ImageDraw

    row_h, pad, gap = 22 * scale, 8 * scale, 12 * scale
    font = _font(12 * scale)
    bold = _font(13 * scale)
    heights = []
    for _title, sections in columns:
        h_col = row_h + 4 * scale
        for sec in sections:
            h_col += row_h + 4 * scale
            for ln in sec.lines:
                h_col += 2 * scale if ln.box_edge else row_h
        heights.append(h_col + pad)
    w = (width * scale + gap) * len(columns) + gap
    h = max(heights) + gap * 2
    img = Image.new("RGB", (w, h), (35, 35, 35))
    draw = ImageDraw.Draw(img)
    for c, (title, sections) in enumerate(columns):
        x0 = gap + c * (width * scale + gap)
        x1 = x0 + width * scale
        y = gap
        draw.rectangle([x0, y, x1, y + heights[c]], fill=THEME["bg"])
        draw.text((x0 + pad, y + 4 * scale), title, font=bold, fill=THEME["dim"])
        y += row_h + 4 * scale
        for sec in sections:
            indent = pad * (2 if sec.title.startswith(" ") else 1)
            draw.rectangle([x0 + indent - 4 * scale, y, x1 - pad + 4 * scale, y + row_h - 2],
                           fill=THEME["header"])
            draw.text((x0 + indent, y + 3 * scale), "v  " + sec.title.strip(), font=bold,
                      fill=THEME["text"])
            y += row_h
            box_depth = 0
            for ln in sec.lines:
                if ln.box_edge == "top":
                    box_depth = ln.depth
                    y += 2 * scale
                    continue
                if ln.box_edge == "bottom":
                    box_depth = ln.depth - 1
                    y += 2 * scale
                    continue
                lx0 = x0 + indent + 6 * scale * ln.depth
                lx1 = x1 - pad - 6 * scale * ln.depth
                if ln.depth:
                    draw.rectangle([lx0 - 5 * scale, y, lx1 + 5 * scale, y + row_h],
                                   fill=THEME["list"] if ln.list_row else THEME["box"])
                if ln.list_row and ln.extra.get("active"):
                    draw.rectangle([lx0 - 4 * scale, y + 1, lx1 + 4 * scale, y + row_h - 1],
                                   fill=THEME["active_row"])
                _draw_line(draw, ln, lx0, lx1, y, row_h, font, scale)
                y += row_h
            del box_depth
            y += 4 * scale
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


def _draw_line(draw, ln: Line, x0: int, x1: int, y: int, row_h: int, font, scale: int) -> None:
    segs = ln.segs
    if not segs:
        return
    widths = []
    for s in segs:
        tw = draw.textlength(seg_text(s) if s.kind in ("label",) else s.text, font=font)
        widths.append(tw + (10 * scale if s.kind != "label" else 4 * scale))
    total = x1 - x0
    flexible = [i for i, s in enumerate(segs) if s.kind in ("field", "menu", "progress")
                or (s.kind == "button" and len(s.text) > 3)]
    fixed = sum(w for i, w in enumerate(widths) if i not in flexible)
    spare = max(total - fixed - sum(widths[i] for i in flexible), 0)
    if flexible:
        for i in flexible:
            widths[i] += spare / len(flexible)
    x = x0
    for s, wdt in zip(segs, widths):
        wdt = min(wdt, x1 - x) if x < x1 else 0
        if wdt <= 0:
            break
        top, bot = y + 2 * scale, y + row_h - 2 * scale
        fill = None
        if s.kind == "button" or s.kind == "toggle":
            fill = THEME["depress"] if s.depress else THEME["button"]
        elif s.kind == "field":
            fill = THEME["field"]
        elif s.kind == "menu":
            fill = THEME["menu"]
        elif s.kind == "progress":
            fill = THEME["field"]
        if s.alert and s.kind != "label":
            fill = THEME["alert"]
        if fill is not None:
            draw.rounded_rectangle([x + 1, top, x + wdt - 2, bot], radius=4 * scale, fill=fill)
        if s.kind == "progress":
            draw.rounded_rectangle([x + 1, top, x + 1 + (wdt - 3) * s.factor, bot],
                                   radius=4 * scale, fill=THEME["progress"])
        colour = THEME["dim"] if s.disabled else THEME["text"]
        if s.alert and s.kind == "label":
            colour = (255, 130, 130)
        text = s.text if s.kind != "label" else seg_text(s)
        tx = x + (5 * scale if s.kind != "label" else 0)
        if s.kind in ("button",) and len(s.text) <= 3:
            tx = x + (wdt - draw.textlength(text, font=font)) / 2
        draw.text((tx, y + 3 * scale), text, font=font, fill=colour)
        x += wdt + 2 * scale


# =========================================================================== the demo scene
def song_excerpt(folder: Path, src: Path = SONG, seconds: float = SONG_SECONDS) -> Path:
    import soundfile as sf

    y, sr = sf.read(str(src), frames=int(seconds * 44100), dtype="float32", always_2d=True)
    out = folder / f"{src.stem}_{seconds:g}s.wav"
    sf.write(str(out), y, sr)
    return out


def build_scene(song: Path):
    """A scene choreographed and edited by the real operators; returns the context."""
    import bpy

    sys.path.insert(0, str(REPO))
    import blender_m2d
    from blender_m2d import operators, rigs

    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender_m2d.register()
    ob = rigs.build_test_armature("mixamo", name="Dancer")
    s = bpy.context.scene.m2d
    s.armature = ob
    s.song_path = str(song)
    assert bpy.ops.m2d.choreograph() == {"FINISHED"}
    plan = operators.plan_of(s)
    alt = plan.phrases[2].candidates[1].phrase_id
    assert bpy.ops.m2d.swap(index=2, phrase_id=alt) == {"FINISHED"}
    assert bpy.ops.m2d.toggle_lock(index=0) == {"FINISHED"}
    s.active_phrase = 2
    return bpy.context


def states(context):
    """(title, sections) for: the edited choreography; a run in progress; an error."""
    from blender_m2d import panels

    view3d = (panels.M2D_PT_view3d_main, panels.M2D_PT_view3d_phrases,
              panels.M2D_PT_view3d_quality)
    out = [("Sidebar > Dance: after Choreograph, swap, lock",
            panel_sections(context, view3d))]
    import time

    from blender_m2d import operators

    st = context.window_manager.m2d_job
    keep = (st.running, st.progress, st.status, st.error, st.info)
    try:
        job = operators.start_job(context)       # a real run, drawn at a fixed progress
        st.progress, st.status = 0.42, "analysing the song"
        out.append(("While choreographing (Cancel: scene unchanged)",
                    panel_sections(context, view3d[:1])))
        job.request_cancel()
        while job.poll(context) == operators.RUNNING:
            time.sleep(0.02)
        st.running, st.progress, st.status = False, 0.0, ""
        st.error = ("/songs/broken.mp3: cannot decode this file: it is damaged or not in a "
                    "supported audio format")
        out.append(("Bad input: the error stays in the panel",
                    panel_sections(context, view3d[:1])))
    finally:
        st.running, st.progress, st.status, st.error, st.info = keep
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DOCS)
    ap.add_argument("--check", action="store_true",
                    help="compare with the committed docs/ui_panel.txt instead of writing")
    args = ap.parse_args(argv)
    import tempfile

    tmp = tempfile.TemporaryDirectory()
    context = build_scene(song_excerpt(Path(tmp.name)))
    cols = states(context)
    text = "\n".join(sections_text(t, secs) for t, secs in cols)
    text = ("# The Dance panel, drawn headless by tools/render_panel_mock.py from the add-on's "
            "real draw code.\n# [button]  [*pressed*]  [button]~ = disabled (poll fails)  "
            "[menu v]  [L]/[ ] lock  > active row\n\n" + text)
    txt = args.out / "ui_panel.txt"
    if args.check:
        old = txt.read_text() if txt.is_file() else ""
        if old != text:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True),
                                                       text.splitlines(True), "committed",
                                                       "current"))
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    txt.write_text(text)
    render_png(cols, args.out / "ui_panel.png")
    print(f"wrote {txt} and {args.out / 'ui_panel.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
