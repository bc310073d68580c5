"""Fetch real recorded background sound from Debian packages into var/background/: an evaluation pool and a training pool.

    apt-get update          # once: `apt-get download` needs Debian's package index
    .venv/bin/python bench/fetch_background.py [--out var/background] [--package NAME ...] [--clip-seconds 30]

For each package of SOURCES: `apt-get download` its .deb into <out>/debs/ (kept: a rerun downloads nothing), `dpkg-deb -x` it into
<out>/src/<package>/, take the files SOURCES names there (recordings of places and things: forests, rain, wind, water, fire, a city
street, a crowd, a factory, engines, aircraft; never the packages' music or synthesized effects), check the licence SOURCES gives
against the package's /usr/share/doc/<package>/copyright (the paragraph that names the file, in a machine-readable one), and write
each recording as mono 24 kHz FLAC clips of at most --clip-seconds (a longer one is cut into equal parts) into <out>/eval/ or
<out>/train/. Recordings shorter than --min-seconds (5 s) are left out, none is looped. The pool is picked by a stable hash of the
package and the file's path in it, so the same recording always lands in the same pool and the two never share one; a recording
whose decoded audio another already has (MegaGlest ships some in several tilesets) is kept once. Each clip is scaled to -23 dBFS
RMS (peaks at most -1 dBFS): the degradation sets its own level from the SNR.

Writes <out>/manifest.csv (file, package, original_path, licence, seconds, pool) and prints minutes per package and pool. The
evaluation reads <out>/eval (configs/eval.yaml queries.background_dir); the fingerprint's training augmentation reads <out>/train
(configs/fingerprint.yaml augment.background_dir), so that no recording is both trained on and evaluated with. README.md names
the packages and licences.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
SR = 24000
TARGET_RMS, PEAK = 10 ** (-23 / 20), 10 ** (-1 / 20)


@dataclass(frozen=True)
class Source:
    """Files of one Debian package under one licence. ``files``: glob patterns relative to the unpacked package; a member of a
    zip archive in it (UFO:AI's .pk3) is ``<archive>!<pattern>``. ``licence``: as the package's copyright file names it; the
    check finds it in the DEP-5 paragraph that covers the file (``upstream`` maps the installed path to the path that copyright
    file uses) or, in a free-form copyright file, finds ``evidence`` there."""

    package: str
    content: str
    licence: str
    files: tuple[str, ...]
    upstream: tuple[str, str] = ("", "")  # (installed prefix, upstream prefix)
    evidence: str = ""
    pool: str | None = None  # "train": train-only (see TRAIN_ONLY); None: the hash rule (pool_of)
    join: bool = False  # its files are short (spoken words, 4 s loops): joined into clips (join_clips), not left out
    voices: tuple[int, int] = (1, 1)  # with join: how many of its files sound at once, at least and at most (drawn per clip)


TILESETS = "usr/share/games/megaglest/tilesets/*/sounds/"
UFO_PK3 = "usr/share/games/ufoai/base/0snd.pk3!sound/ambience/"
SCORCHED = "usr/share/games/scorched3d/data/globalmods/"
SOURCES = [
    Source("megaglest-data", "forest, jungle, meadow and desert ambience by day and by night (birds, insects, frogs), rain, wind",
           "CC-BY-SA-3.0", tuple(TILESETS + f for f in ("day.ogg", "night.ogg", "nightime.ogg", "sunny_day.ogg", "desertday.ogg", "rain.ogg",
                                                        "rain.wav", "wind.ogg"))),
    Source("ufoai-sound", "arctic wind, fire, thunder, running water, a fountain, a wind turbine, a TV news broadcast, a sandy town",
           "CC-BY-SA-3.0", tuple(UFO_PK3 + f for f in ("arcticwind.ogg", "fire.ogg", "smallfire.ogg", "thunder1.ogg", "thunder2.ogg",
                                                       "thunder3.ogg", "water01.ogg", "waterfontain.ogg", "wind_turbine.ogg", "tv_newswav.ogg",
                                                       "sand-city.ogg")),
           upstream=("usr/share/games/ufoai/base/0snd.pk3!", "base/")),
    Source("ufoai-sound", "an abandoned city and a night outdoors (ambience loops), machine hum", "GPL-2+",
           tuple(UFO_PK3 + f for f in ("city_abnd_ufoai_atm.ogg", "ufo_night_atm.ogg", "hum2.ogg", "machine1.ogg")),
           upstream=("usr/share/games/ufoai/base/0snd.pk3!", "base/")),
    Source("ufoai-sound", "a mine pump", "CC-BY-3.0", (UFO_PK3 + "minepump03.ogg",), upstream=("usr/share/games/ufoai/base/0snd.pk3!", "base/")),
    Source("scorched3d-data", "birds, frogs, ocean waves, rain, a jet, a tank engine (11 kHz recordings: nothing above 5.5 kHz)", "GPL-2+",
           tuple(SCORCHED + "none/data/wav/" + f for f in ("misc/birds1.wav", "misc/birds2.wav", "misc/frogs.wav", "misc/oceanwaves.wav",
                                                          "misc/rain.wav", "misc/jet.wav", "movement/tankmove.wav")),
           upstream=("usr/share/games/scorched3d/", "")),
    Source("scorched3d-data", "a cheering crowd, a city street, a factory, a light aircraft, a helicopter (11 kHz)", "CC-BY-SA-3",
           tuple(SCORCHED + "apoc/data/wav/misc/" + f for f in ("cheeringloop.wav", "citysounds.wav", "factoryloop1.wav", "cessna.wav",
                                                                "helicopter.wav")),
           upstream=("usr/share/games/scorched3d/", "")),
    Source("lugaru-data", "desert ambience, wind", "CC-BY-SA-3.0",
           ("usr/share/games/lugaru/Sounds/DesertAmbient.ogg", "usr/share/games/lugaru/Sounds/Wind.ogg"), upstream=("usr/share/games/lugaru/", "Data/")),
    Source("wesnoth-1.16-data", "a campfire, a ship at sea, night insects, birds", "GPL-2+",
           tuple("usr/share/games/wesnoth/1.16/data/core/sounds/ambient/" + f for f in ("campfire.ogg", "ship.ogg", "night.ogg", "birds2.ogg",
                                                                                      "birds3.ogg")),
           evidence="GNU General Public License version 2 or at your option any later version"),
    # TRAIN_ONLY: the sources below came later (2026-11) and go to the train pool only, so the eval pool, and every figure
    # measured with it, stays exactly as it was. Their files are short, so they are joined (join_clips).
    Source("ktuberling-data", "people talking, one at a time: spoken words, a child's toy's vocabulary, by a different speaker per "
           "language (en, de, el, gl, sl, wa)", "GPL-2+",
           tuple(f"usr/share/ktuberling/sounds/{lang}/*.ogg" for lang in ("en", "de", "el", "gl", "sl", "wa")),
           upstream=("usr/share/ktuberling/", ""), pool="train", join=True),
    Source("klettres-data", "a babble of 3 to 6 voices at once: letters and syllables spoken by a speaker per language (22 languages)",
           "GPL-2+", ("usr/share/klettres/*/syllab/*.ogg",
                      *(f"usr/share/klettres/{lang}/alpha/*.ogg" for lang in ("ar", "cs", "de", "en", "en_GB", "es", "fr", "he", "hu",
                                                                            "it", "lt", "ml", "nb", "nds", "nl", "pt_BR", "ru", "tn",
                                                                            "uk"))),
           upstream=("usr/share/klettres/", ""), pool="train", join=True, voices=(3, 6)),
    Source("lincity-ng-data", "a city's 4 s ambience loops: traffic, a sports crowd, a market, streets, a school, industry, mines, a "
           "harbour, a power station, farms", "GPL-2+",
           tuple(f"usr/share/games/lincity-ng/sounds/{n}*.wav" for n in (
               "TraficHigh", "TraficLow", "SportsCroud", "Market", "Residential", "School", "University", "Shanty", "IndustryHigh",
               "IndustryLight", "CoalMine", "OreMine", "Harbor", "PowerCoal", "Commune", "Farm", "OrganicFarm", "Mill", "Recycle", "Tip",
               "Water", "DirtTrack", "FireStation", "Blacksmith")),
           upstream=("usr/share/games/lincity-ng/", "data/"), pool="train", join=True),
]


def run(cmd: list[str], cwd: Path | None = None) -> None:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"fetch_background: {' '.join(cmd)} failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}"
                         + (" (run `apt-get update` first)" if cmd[0] == "apt-get" else ""))


def unpack(package: str, out: Path) -> Path:
    """The package downloaded (once) into out/debs and unpacked (once) into out/src/<package>; its folder."""
    debs, dest = out / "debs", out / "src" / package
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{package}_*.deb")):
        print(f"fetch_background: apt-get download {package}", file=sys.stderr)
        run(["apt-get", "download", package], cwd=debs)
    if not (dest / ".unpacked").exists():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(sorted(debs.glob(f"{package}_*.deb"))[-1]), str(dest)])
        (dest / ".unpacked").touch()
    return dest


def files_of(source: Source, tree: Path) -> list[tuple[str, bytes]]:
    """(path in the package, file bytes) of every file the source names, sorted by path."""
    found = {}
    for pattern in source.files:
        if "!" in pattern:
            archive, member = pattern.split("!", 1)
            with zipfile.ZipFile(tree / archive) as z:
                for name in fnmatch.filter(z.namelist(), member):
                    found[f"{archive}!{name}"] = z.read(name)
        else:
            for path in tree.glob(pattern):
                found[str(path.relative_to(tree))] = path.read_bytes()
    return sorted(found.items())


def copyright_text(package: str, tree: Path) -> str:
    return (tree / "usr/share/doc" / package / "copyright").read_text(errors="replace")


def dep5_licence(text: str, path: str) -> str | None:
    """The licence of ``path`` (upstream-relative) in a machine-readable (DEP-5) copyright file: the last Files paragraph whose
    patterns match it; None for a free-form file."""
    if not text.startswith("Format:"):
        return None
    licence = None
    for para in re.split(r"\n\s*\n", text):
        if not para.startswith("Files:"):
            continue
        patterns = re.match(r"Files:((?:.*\n?)(?:[ \t].*\n?)*)", para).group(1).split()
        match = re.search(r"^License: *(\S+)", para, re.M)
        if match and any(fnmatch.fnmatchcase(path, p) for p in patterns):
            licence = match.group(1)
    return licence


def check_licence(source: Source, text: str, path: str) -> None:
    installed, upstream = source.upstream
    found = dep5_licence(text, upstream + path.removeprefix(installed) if path.startswith(installed) else path)
    if found is None:
        if " ".join((source.evidence or f"License: {source.licence}").split()) not in " ".join(text.split()):
            raise SystemExit(f"fetch_background: {source.package} {path}: its copyright file does not say {source.evidence or source.licence!r}")
    elif found != source.licence:
        raise SystemExit(f"fetch_background: {source.package} {path}: its copyright file says {found}, not {source.licence}")


def pool_of(package: str, path: str) -> str:
    """eval or train, by a stable hash of the package and the file's path in it (about half the files each)."""
    return "eval" if hashlib.sha256(f"{package}/{path}".encode()).digest()[0] < 128 else "train"


def pool_for(source: Source, path: str) -> str:
    """The source's forced pool, else pool_of."""
    return source.pool or pool_of(source.package, path)


def trim(wave: np.ndarray, floor: float = 0.01) -> np.ndarray:
    """Without the leading and trailing samples under ``floor`` times the peak (a spoken word's silence around it)."""
    loud = np.flatnonzero(np.abs(wave) >= floor * float(np.max(np.abs(wave), initial=0)))
    return wave[loud[0]:loud[-1] + 1] if len(loud) else wave[:0]


def join_clips(members: list[tuple[str, np.ndarray]], seed: str, clip_seconds: float, min_seconds: float,
               voices: tuple[int, int] = (1, 1)) -> list[tuple[np.ndarray, list[str]]]:
    """Short recordings joined into clips of ``clip_seconds`` (the last one shorter; under ``min_seconds`` left out): (clip, the
    paths of its members). The members, each trimmed of its silence, come in an order seeded by ``seed``; each clip draws how
    many voices sound at once from ``voices`` and gives each voice the next members, one after another with a 0.1-0.5 s pause
    between two, until it fills the clip; the voices are summed and the clip scaled like any recording (level). One voice is
    one talker at a time (a conversation, a TV); 3 to 6 make a babble (a bar, a crowd). Every member is in one clip only."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little"))
    queue = [members[i] for i in rng.permutation(len(members))]
    length, clips = int(clip_seconds * SR), []
    while queue:
        count = int(rng.integers(voices[0], voices[1] + 1))
        tracks, names = [], []
        for _ in range(count):
            parts, filled = [], 0
            while queue and filled < length:
                path, wave = queue.pop(0)
                wave = trim(wave)
                if len(wave) == 0:
                    continue
                gap = np.zeros(int(rng.uniform(0.1, 0.5) * SR), np.float32) if parts else np.zeros(0, np.float32)
                parts += [gap, wave]
                filled += len(gap) + len(wave)
                names.append(path)
            if parts:
                tracks.append(np.concatenate(parts)[:length])
        if not tracks:
            break
        mix = np.zeros(max(len(t) for t in tracks), np.float32)
        for t in tracks:
            mix[:len(t)] += t
        if len(mix) >= min_seconds * SR:
            clips.append((level(mix), names))
    return clips


def level(mono: np.ndarray) -> np.ndarray:
    """Scaled to -23 dBFS RMS with peaks at most -1 dBFS."""
    rms, peak = float(np.sqrt(np.mean(mono.astype(np.float64) ** 2))), float(np.max(np.abs(mono), initial=0))
    return (mono * min(TARGET_RMS / max(rms, 1e-9), PEAK / max(peak, 1e-9))).astype(np.float32)


def decode(data: bytes) -> np.ndarray:
    """Mono float32 at 24 kHz, scaled to -23 dBFS RMS with peaks at most -1 dBFS."""
    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    mono = wave.mean(axis=1)
    if rate != SR:
        mono = soxr.resample(mono, rate, SR, quality="HQ")
    return level(mono)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "background")
    ap.add_argument("--package", action="append", help="only these packages (default: all of SOURCES)")
    ap.add_argument("--clip-seconds", type=float, default=30.0, help="longest clip; a longer recording is cut into equal parts")
    ap.add_argument("--min-seconds", type=float, default=5.0, help="shorter recordings are left out")
    args = ap.parse_args()
    out = args.out
    sources = [s for s in SOURCES if not args.package or s.package in args.package]
    for pool in ("eval", "train"):
        shutil.rmtree(out / pool, ignore_errors=True)
        (out / pool).mkdir(parents=True)
    rows, seen, left_out, joined, joined_count = [], {}, [], [], {}
    for source in sources:
        tree = unpack(source.package, out)
        text = copyright_text(source.package, tree)
        chosen = files_of(source, tree)
        if not chosen:
            raise SystemExit(f"fetch_background: {source.package}: none of {', '.join(source.files)} is in the package")
        short: dict[str, list[tuple[str, np.ndarray]]] = {}  # pool: the short files a join source joins
        for path, data in chosen:
            check_licence(source, text, path)
            wave = decode(data)
            seconds = len(wave) / SR
            digest = hashlib.sha256(np.round(wave * 32767).astype(np.int16).tobytes()).hexdigest()
            if digest in seen:
                left_out.append(f"{source.package} {path}: the same audio as {seen[digest]}")
                continue
            seen[digest] = f"{source.package} {path}"
            pool = pool_for(source, path)
            if seconds < args.min_seconds and source.join:
                short.setdefault(pool, []).append((path, wave))
                continue
            if seconds < args.min_seconds:
                left_out.append(f"{source.package} {path}: {seconds:.2f} s, under {args.min_seconds:g} s")
                continue
            parts = int(np.ceil(seconds / args.clip_seconds))
            for k, piece in enumerate(np.array_split(wave, parts)):
                name = f"{source.package}__{slug(path.split('/', 3)[-1].rsplit('.', 1)[0])}__{k:02d}.flac"
                sf.write(out / pool / name, piece, SR, subtype="PCM_16")
                rows.append({"file": f"{pool}/{name}", "package": source.package, "original_path": path, "licence": source.licence,
                             "seconds": round(len(piece) / SR, 2), "pool": pool})
        for pool, members in short.items():
            for clip, names in join_clips(members, f"{source.package}/{source.files}", args.clip_seconds, args.min_seconds, source.voices):
                joined_count[source.package] = joined_count.get(source.package, 0) + 1
                name = f"{source.package}__joined__{joined_count[source.package]:03d}.flac"
                sf.write(out / pool / name, clip, SR, subtype="PCM_16")
                prefix = os.path.commonpath(names) if len(names) > 1 else os.path.dirname(names[0])
                rows.append({"file": f"{pool}/{name}", "package": source.package, "original_path": f"{prefix}/ ({len(names)} files joined)",
                             "licence": source.licence, "seconds": round(len(clip) / SR, 2), "pool": pool})
                joined += [{"file": f"{pool}/{name}", "member": n} for n in names]
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "package", "original_path", "licence", "seconds", "pool"])
        w.writeheader()
        w.writerows(rows)
    with open(out / "joined.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "member"])
        w.writeheader()
        w.writerows(joined)
    for line in left_out:
        print(f"left out: {line}")
    print(f"\n{'package':20s} {'licence':14s} {'files':>5s} {'eval min':>9s} {'train min':>9s}")
    for package in dict.fromkeys(r["package"] for r in rows):
        for licence in dict.fromkeys(r["licence"] for r in rows if r["package"] == package):
            mine = [r for r in rows if r["package"] == package and r["licence"] == licence]
            minutes = {p: sum(r["seconds"] for r in mine if r["pool"] == p) / 60 for p in ("eval", "train")}
            print(f"{package:20s} {licence:14s} {len({r['original_path'] for r in mine}):5d} {minutes['eval']:9.1f} {minutes['train']:9.1f}")
    totals = {p: sum(r["seconds"] for r in rows if r["pool"] == p) / 60 for p in ("eval", "train")}
    files = {p: len({(r["package"], r["original_path"]) for r in rows if r["pool"] == p}) for p in ("eval", "train")}
    print(f"{'total':35s} {files['eval'] + files['train']:5d} {totals['eval']:9.1f} {totals['train']:9.1f}")
    print(f"\nfetch_background: {len(rows)} clips -> {out / 'eval'} ({files['eval']} recordings, {totals['eval']:.1f} min) and {out / 'train'} "
          f"({files['train']} recordings, {totals['train']:.1f} min); manifest {out / 'manifest.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
