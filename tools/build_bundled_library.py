"""Build the default dance library shipped in blender_m2d/assets/library/.

Run from the repository root (needs ../shared/data/mocap and the bpy venv):

    .venv/bin/python tools/build_bundled_library.py [--mocap ../shared/data/mocap]

Inputs: CMU subject 5 (modern/ballet, CC_Base rig, 005_02-005_18; 005_01 is a walk and is left
out) and the *lead* dancer of the CMU salsa takes (subject 60, cgspeed rig). The follow dancer
(subject 61) is left out to keep the repository lean: the lead takes already give the salsa
vocabulary, and each extra minute costs ~0.55 MB. The script writes the library atomically,
then SOURCES.md (provenance, CMU attribution, the facts of the build) and the Apache-2.0 licence
of the salsa conversion next to it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "blender_m2d" / "assets" / "library"
META = {
    "cmu_05_modern/*": {"style": "modern", "tags": ["cmu", "subject-5", "modern-ballet"]},
    "cmu_salsa/60_*": {"style": "salsa", "tags": ["cmu", "subject-60", "salsa-lead"]},
}

ATTRIBUTION = """\
Motion capture: The data used in this project was obtained from mocap.cs.cmu.edu.
The database was created with funding from NSF EIA-0196217.
(Subject 5 via the "IClone CMU Mocap" conversion by DragonForgedTheArtist;
subjects 60/61 via the cgspeed.com BVH conversion by Bruce Hahne, as scaled in
beemsoft/webxr-handtracking-playground, Apache License 2.0.)"""


def sources(mocap: Path) -> list[Path]:
    modern = sorted((mocap / "cmu_05_modern").glob("005_*.bvh"))
    modern = [p for p in modern if p.stem != "005_01"]          # 005_01 is a walk
    salsa = sorted((mocap / "cmu_salsa").glob("60_*.bvh"))      # lead dancer only
    return modern + salsa


def write_sources_md(report, mocap: Path, command: str) -> None:
    lib = report.library
    s = lib.summary()
    lines = [
        "# Bundled dance library: sources and attribution",
        "",
        "Built by `tools/build_bundled_library.py` from the repository root:",
        "",
        "```",
        command,
        "```",
        "",
        "## Attribution (ship with anything built on this library)",
        "",
        "```",
        ATTRIBUTION,
        "```",
        "",
        "The salsa takes come from a conversion published under the Apache License 2.0; its text "
        "is in `LICENSE-Apache-2.0.txt` next to this file. CMU's terms allow research and "
        "commercial use and ask for the acknowledgement above. Full provenance of every input "
        "file (repositories, commits, changes such as the salsa frame-time correction to 60 fps) "
        "is in `../shared/data/SOURCES.md` of the developers' checkout.",
        "",
        "## Inputs",
        "",
        "| take | source | style | rig | seconds | phrases |",
        "|---|---|---|---|---|---|",
    ]
    for t in lib.takes:
        lines.append(f"| {t['take']} | {t['source']} | {t['style']} | {t['rig']} | "
                     f"{t['duration_s']:.1f} | {t['n_phrases']} |")
    lines += ["", "Left out on purpose: `cmu_05_modern/005_01.bvh` (a walk, not a dance) and "
              "the follow dancer `cmu_salsa/61_*.bvh` (size).", ""]
    if lib.skipped:
        lines += ["Skipped by the builder (listed in library.json too):", ""]
        lines += [f"- `{k['source']}`: {k['reason']}" for k in lib.skipped]
        lines.append("")
    t = s["tempo_bpm"]
    lines += [
        "## Facts",
        "",
        f"- phrases K = {s['phrases']}, {s['minutes']} minutes of dance at {s['fps']:g} fps",
        "- styles: " + ", ".join(f"{k} ({v} phrases)" for k, v in s["styles"].items()),
        f"- dance-beat tempo {t['min']}-{t['max']} bpm (median {t['median']}), "
        f"{s['beats_per_phrase']['min']}-{s['beats_per_phrase']['max']} beat intervals and "
        f"{s['phrase_s']['min']}-{s['phrase_s']['max']} s per phrase",
        f"- mocap read: {report.mocap_s / 60:.1f} min from {len(lib.takes) + len(lib.skipped)} "
        f"takes; library hash `{lib.hash}`",
        f"- motion stored as float16 (float32 root), {s['size_bytes'] / 1e6:.2f} MB on disk "
        "including this file",
        "",
    ]
    (OUT / "SOURCES.md").write_text("\n".join(lines), encoding="utf-8")
    lic = mocap / "cmu_salsa" / "LICENSE-Apache-2.0.txt"
    if lic.is_file():
        shutil.copyfile(lic, OUT / "LICENSE-Apache-2.0.txt")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mocap", type=Path, default=REPO.parent / "shared" / "data" / "mocap")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from blender_m2d.library_build import build_library

    files = sources(args.mocap)
    if not files:
        print(f"no mocap under {args.mocap}", file=sys.stderr)
        return 2
    command = "python tools/build_bundled_library.py --mocap ../shared/data/mocap"
    report = build_library(files, args.out, meta=META, name="cmu-dance (bundled)",
                           command=command)
    write_sources_md(report, args.mocap, ".venv/bin/" + command)
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
