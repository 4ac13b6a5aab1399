"""Listing an EMBED-sized download through the `embed` layout: wall time and peak memory of
list_described (metadata table joined with the clinical table on acc_anon, every row's file looked
up on disk), next to pandas.read_csv reading the same two CSVs whole as a floor.

    python benchmarks/bench_listing.py [--scale 1.0] [--repeats 3] [--dir DIR] [--keep] [--profile]
    python benchmarks/bench_listing.py --scale 0.01 --repeats 1       # a quick check

Setup (not measured, timed apart, in a process of its own): a synthetic EMBED download is written
into a temporary folder (or --dir). DIR/tables/EMBED_OpenData_clinical.csv: 480,000 finding rows x
~100 columns at --scale 1 (tissueden the same on every row of an exam: 1-4, some 5 = male, some
blank; several findings per exam; about a quarter of the exams have no images).
DIR/tables/EMBED_OpenData_metadata.csv: 365,000 DICOM rows x ~60 columns (about 4 images per exam,
about 3.5 exams per patient; some C-View and spot-compression rows; every acc_anon is in the clinical
table). One EMPTY file per metadata row under DIR/<--image-folder, default images>/cohort_1/<empi>/
<study>/<series>/<sop>.dcm, the tail of its anon_dicom_path (/mnt/NAS2/mammo/anon_dicom/cohort_1/...):
the listing only checks that each file exists.

Measured: each repeat runs in a fresh Python process (so its peak RSS, getrusage ru_maxrss, is the
listing's alone plus the interpreter and imports, reported apart; /proc VmHWM cross-checks it), with
a group-id secret of its own under DIR unless one is configured: `list_described(
load_layout("embed"), DIR)`. The floor is pandas.read_csv of both CSVs, all columns, default dtype
inference, also in a fresh process each repeat. Medians and every run are printed, with the row
counts (rows read, candidates, left-out rows by problem kind) checked against what the generator
wrote, and PASS/FAIL against the targets: under 30 s and under 2 GB (2e9 bytes) peak RSS.
--profile adds one cProfile run of the listing (top functions by own time and cumulative time).

The generated folder (~0.6 GB of CSVs, 365k empty files at --scale 1) is removed at the end unless
--dir or --keep is given; --dir reuses a folder this script generated with the same settings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLINICAL_ROWS = 480_000
METADATA_ROWS = 365_000
TARGET_S = 30.0
TARGET_BYTES = 2_000_000_000
MARKER = ".bench_listing.json"
VERSION = 2  # of the generated folder (a --dir written by another version is regenerated)
TABLES = "tables"  # the download keeps its CSVs in tables/ and its DICOMs in images/cohort_N/
METADATA_CSV = "EMBED_OpenData_metadata.csv"
CLINICAL_CSV = "EMBED_OpenData_clinical.csv"
EMORY_PREFIX = "/mnt/NAS2/mammo/anon_dicom/cohort_1"
UID_ROOT = "1.2.826.0.1.3680043.8.498."

# --- synthetic tables -----------------------------------------------------------------------------
# Filler columns: (name, values to draw from). "" is a blank cell. Values with a comma are quoted.

_BLANKY = ["", "", "", ""]
_META_FILLER = [
    ("Unnamed: 0", None),  # the row number pandas writes
    ("StudyDescription", ["MG Screening Bilateral", "MG Diagnostic Bilateral", "MG Screen Bilat w/ Tomo",
                          "MG Diag Left w/ Tomo", "MG Diagnostic Right"]),
    ("SeriesDescription", ["L CC", "R CC", "L MLO", "R MLO", "L CC C-View", "R MLO C-View", ""]),
    ("Manufacturer", ['"HOLOGIC, Inc."', "GE MEDICAL SYSTEMS", "FUJIFILM Corporation"]),
    ("ManufacturerModelName", ["Selenia Dimensions", "Lorad Selenia", "Senographe Essential", "FDR-3000AWS"]),
    ("SoftwareVersions", ["1.10.3.4", "AWS:MAMMODROC_2_5_1", "ADS_54.11", ""]),
    ("Modality", ["MG"]),
    ("PresentationIntentType", ["FOR PRESENTATION"]),
    ("PhotometricInterpretation", ["MONOCHROME2", "MONOCHROME1"]),
    ("Rows", ["4096", "3328", "2294", "2457"]),
    ("Columns", ["3328", "2560", "1914", "1996"]),
    ("BitsStored", ["12", "10", "14"]),
    ("PixelSpacing", ['"[0.065, 0.065]"', '"[0.1, 0.1]"', '"[0.07, 0.07]"']),
    ("ImagerPixelSpacing", ['"[0.07, 0.07]"', '"[0.1, 0.1]"']),
    ("WindowCenter", ["2047", "540", "1800.0", '"[2047, 2047]"']),
    ("WindowWidth", ["4095", "580", "3600.0"]),
    ("BodyPartExamined", ["BREAST", ""]),
    ("BreastImplantPresent", ["NO", "NO", "NO", "YES", ""]),
    ("CompressionForce", ["89.0", "112.5", "75.6", "130.2", ""]),
    ("BodyPartThickness", ["52", "61", "45", "38", "70", ""]),
    ("KVP", ["28", "29", "31", "33", "35"]),
    ("Exposure", ["98", "134", "201", "76"]),
    ("ExposureTime", ["1024", "1289", "870"]),
    ("XRayTubeCurrent", ["100", "120", "160"]),
    ("ExposureInuAs", ["98000", "134000", "201000"]),
    ("RelativeXRayExposure", ["512", "618", "733", ""]),
    ("DistanceSourceToDetector", ["700", "660"]),
    ("DistanceSourceToPatient", ["675", "637"]),
    ("PositionerPrimaryAngle", ["0", "45", "-45", "90", "-90", "15"]),
    ("DetectorType", ["DIRECT", "SCINTILLATOR"]),
    ("DetectorID", ["S1234567", "D9988776", ""]),
    ("AnodeTargetMaterial", ["TUNGSTEN", "MOLYBDENUM", "RHODIUM"]),
    ("FilterMaterial", ["RHODIUM", "SILVER", "ALUMINUM", "MOLYBDENUM"]),
    ("FocalSpots", ["0.3", "0.1"]),
    ("EstimatedRadiographicMagnificationFactor", ["1.07", "1.08", "1.8"]),
    ("OrganDose", ["1.12", "1.45", "0.98", "2.01"]),
    ("EntranceDoseInmGy", ["4.5", "6.1", "3.9"]),
    ("ViewCodeSequence_0_CodeMeaning", ["cranio-caudal", "medio-lateral oblique", "latero-medial", ""]),
    ("ViewModifierCodeSequence_0_CodeMeaning", _BLANKY + ["spot compression", "magnification", "cleavage"]),
    ("PatientOrientation", ['"[\'A\', \'R\']"', '"[\'P\', \'L\']"', '"[\'A\', \'FR\']"']),
    ("ImageType", ['"[\'DERIVED\', \'PRIMARY\']"', '"[\'ORIGINAL\', \'PRIMARY\']"']),
    ("StudyDate_DCM", ["20140512", "20160823", "20181103", "20120227", "20191115"]),
    ("SeriesNumber", ["1", "71", "73", "1100", "2"]),
    ("InstanceNumber", ["1", "2", "3", "4"]),
    ("AcquisitionNumber", ["1", "0", ""]),
    ("BurnedInAnnotation", ["NO", "NO", "YES"]),
    ("LossyImageCompression", ["00", "01", ""]),
    ("QualityControlImage", ["NO"]),
    ("cohort_num", ["1"]),
    ("png_path", None),  # per row, from the DICOM path
    ("png_filename", None),
    ("match_level", ["1.0", "2.0", ""]),
    ("num_roi", ["0", "0", "0", "1", "2"]),
    ("ROI_coords", ["()", "()", "()", '"((1204, 611, 1456, 890),)"']),
    ("SRC_DST", _BLANKY + ['"[(0.0, 0.0), (1.0, 1.0)]"']),
]
_CLIN_NAMED = [
    ("numfind", ["1", "2", "3"]), ("desc", ["MG Screening Bilateral", "MG Diagnostic Left", "US Breast Left",
                                            "MG Diag Bilat w/ Tomo", "MRI Breast Bilateral"]),
    ("type", ["", "A", "M", "C", "F", "Q"]), ("path_severity", _BLANKY + ["0.0", "1.0", "2.0", "4.0"]),
    ("total_L_find", ["0.0", "1.0", "2.0"]), ("total_R_find", ["0.0", "1.0", "2.0"]),
    ("calcfind", _BLANKY + ["1.0"]), ("calcdistri", _BLANKY + ["C", "G", "L", "S", "R"]),
    ("calcnumber", _BLANKY + ["1.0", "3.0", "12.0"]), ("otherfind", _BLANKY + ["1.0"]),
    ("implanfind", _BLANKY + ["1.0"]), ("consultcomp", _BLANKY + ["1.0"]), ("massshape", _BLANKY + ["O", "R", "X"]),
    ("massmargin", _BLANKY + ["C", "M", "I", "S"]), ("massdens", _BLANKY + ["+", "=", "-"]),
    ("mass_size", _BLANKY + ["0.6", "1.2", "2.3"]), ("loc", _BLANKY + ["UO", "UI", "LO", "LI", "RA", "CE"]),
    ("depth", _BLANKY + ["A", "M", "P"]), ("distance", _BLANKY + ["2.0", "4.5", "7.0"]),
    ("bside", ["", "L", "R", "B"]), ("birads", ["", "1", "2", "0", "3", "4"]),
    ("study_date_anon", ["2014-05-12", "2016-08-23", "2018-11-03", "2012-02-27"]),
    ("procdate_anon", ["", "2014-05-20", "2016-09-01"]), ("pdate_anon", ["", "2014-05-28"]),
    ("age_at_study", ["45.2", "52.8", "61.0", "67.4", "73.1", "58.9"]),
    ("ETHNICITY_DESC", ["Non-Hispanic or Latino", "Hispanic or Latino", "Unknown"]),
    ("RACE_DESC", ["African American  or Black", "Caucasian or White", "Asian",
                   '"Unknown, Unavailable or Unreported"']),
    ("MARITAL_STATUS_DESC", ["Married", "Single", "Divorced", "Widowed", ""]),
    ("GENDER_DESC", ["Female"]), ("first_3_zip", ["303", "300", "301", "302"]),
    ("cohort_num", ["1"]), ("hist_of_malignancy", _BLANKY + ["1.0"]), ("bcomp", _BLANKY + ["1.0"]),
    ("proc_id", ["", "1234.0", "5678.0"]), ("vtype", ["", "1", "2"]), ("biopsite", _BLANKY + ["L", "R"]),
    ("bdepth", _BLANKY + ["A", "M", "P"]), ("bdistance", _BLANKY + ["3.0"]), ("bloc", _BLANKY + ["UO", "LI"]),
    ("massmargin_bx", _BLANKY + ["S"]), ("tumor_stage", _BLANKY + ["0", "I", "II", "III"]),
    ("tumor_size", _BLANKY + ["1.1", "2.4"]), ("nodes_pos", _BLANKY + ["0.0", "1.0"]),
    ("ER", _BLANKY + ["POS", "NEG"]), ("PR", _BLANKY + ["POS", "NEG"]), ("HER2", _BLANKY + ["POS", "NEG", "EQV"]),
]
_CLIN_FILLER = [("Unnamed: 0", None)] + _CLIN_NAMED + [
    (f"{stem}{i}", _BLANKY + choices)
    for stem, choices in (("path", ["1.0", "2.0", "3.0", "4.0", "5.0", "8.0"]),
                          ("hist", ["0.0", "1.0", "2.0", "ductal carcinoma", "fibroadenoma"]),
                          ("grade", ["1", "2", "3"]), ("lesion_size", ["0.4", "1.5", "3.2"]),
                          ("margin", ["CLEAR", "CLOSE", "POS"]))
    for i in range(1, 11)
]  # 1 + 48 + 50 = 99 filler + 5 keys = 104 columns
_POOL = 2000  # distinct filler tails per table; rows draw from them (variety enough for the parsers)


def _tails(rng: random.Random, filler: list[tuple[str, list[str] | None]], split: int) -> list[tuple[str, str]]:
    """(before the keys, after the keys) filler text, each ending / starting with its comma. Columns
    whose value is per row (None) are left as "{}" slots."""
    out = []
    for _ in range(_POOL):
        values = ["{}" if choices is None else rng.choice(choices) for _, choices in filler]
        out.append((",".join(values[:split]) + ",", "," + ",".join(values[split:])))
    return out


def _uid(rng: random.Random) -> str:
    return UID_ROOT + str(rng.getrandbits(124))


def _exams(rng: random.Random, n_images: int):
    """Patients, exams and their images until n_images DICOM rows: yields (empi, acc, tissueden,
    images) where images are (laterality, view, final type, spot_mag, series uid, sop uid)."""
    written = 0
    empi = 10_000_000
    while written < n_images:
        empi += rng.randint(1, 40)
        for _ in range(rng.choices((1, 2, 3, 4, 5, 6, 7), (14, 18, 20, 18, 14, 10, 6))[0]):  # mean ~3.5
            if written >= n_images:
                break
            acc = str(rng.randrange(10**15, 10**16))
            density = rng.choices(("1.0", "2.0", "3.0", "4.0", "5.0", ""), (9, 37, 37, 9, 2, 6))[0]
            sides = ("L", "R") if rng.random() < 0.85 else (rng.choice("LR"),)
            one_series = rng.random() < 0.5
            series = _uid(rng)
            images = []
            for side in sides:
                for view in ("CC", "MLO"):
                    if rng.random() < 0.02:
                        view = rng.choice(("XCCL", "ML", "LM", ""))
                    images.append((side, view, "2D", "", series if one_series else _uid(rng)))
            if rng.random() < 0.06:  # a tomosynthesis exam: a synthesized C-View per 2-D view
                cview_series = _uid(rng)
                images += [(side, view, "cview", "", cview_series) for side, view, _, _, _ in list(images)]
            if rng.random() < 0.08:  # a diagnostic spot compression / magnification view
                images.append((rng.choice(sides), rng.choice(("CC", "ML", "XCCL")), "2D", "1.0", _uid(rng)))
            images = images[: n_images - written]
            written += len(images)
            yield str(empi), acc, density, [(*image, _uid(rng)) for image in images]


def write_dataset(root: Path, scale: float, seed: int, image_folder: str) -> dict:
    """The two CSVs under root/tables and an empty file per metadata row; returns counts and timings."""
    rng = random.Random(seed)
    n_meta, n_clin = max(8, round(METADATA_ROWS * scale)), max(12, round(CLINICAL_ROWS * scale))
    start = time.perf_counter()
    expected: Counter = Counter()
    files: list[str] = []  # image paths relative to the image folder
    exams_with_images: list[tuple[str, str, str]] = []
    meta_split = 30
    meta_tails = _tails(rng, _META_FILLER, meta_split)
    keys = ["empi_anon", "acc_anon", "anon_dicom_path", "ImageLateralityFinal", "ViewPosition",
            "FinalImageType", "spot_mag"]
    header = [n for n, _ in _META_FILLER[:meta_split]] + keys + [n for n, _ in _META_FILLER[meta_split:]]
    lines = [",".join(header)]
    row = 0
    for empi, acc, density, images in _exams(rng, n_meta):
        exams_with_images.append((empi, acc, density))
        study = _uid(rng)
        for side, view, kind, spot, series, sop in images:
            tail = f"cohort_1/{empi}/{study}/{series}/{sop}.dcm"
            files.append(tail)
            before, after = rng.choice(meta_tails)
            png = f"/mnt/NAS2/mammo/anon_png/cohort_1/{empi}/{study}/{series}/{sop}.png"
            lines.append(before.format(row) + f"{empi},{acc},{EMORY_PREFIX}/{tail[len('cohort_1/'):]},{side},{view},"
                         f"{kind},{spot}" + after.format(png, f"{sop}.png"))
            row += 1
            if kind != "2D" or spot:
                expected["view_excluded"] += 1
            elif density in ("", "5.0"):
                expected["no_label"] += 1
            else:
                expected["candidates"] += 1
    (root / TABLES).mkdir(exist_ok=True)
    (root / TABLES / METADATA_CSV).write_text("\n".join(lines) + "\n", encoding="utf-8")
    del lines
    # clinical: every imaged exam plus ~30% more without images (ultrasound, MRI, outside films)
    exams = list(exams_with_images)
    extra_empi = 90_000_000
    for _ in range(round(len(exams) * 0.3)):
        extra_empi += rng.randint(1, 9)
        empi = rng.choice(exams)[0] if rng.random() < 0.7 else str(extra_empi)
        exams.append((empi, str(rng.randrange(10**15, 10**16)),
                      rng.choices(("1.0", "2.0", "3.0", "4.0", "5.0", ""), (9, 37, 37, 9, 2, 6))[0]))
    findings = [1] * len(exams)
    for index in rng.choices(range(len(exams)), k=max(0, n_clin - len(exams))):
        findings[index] += 1
    clin_split = 40
    clin_tails = _tails(rng, _CLIN_FILLER, clin_split)
    header = [n for n, _ in _CLIN_FILLER[:clin_split]] + ["empi_anon", "acc_anon", "side", "asses", "tissueden"] + \
        [n for n, _ in _CLIN_FILLER[clin_split:]]
    lines = [",".join(header)]
    row = 0
    order = sorted(range(len(exams)), key=lambda i: exams[i][0])  # by patient, as the release is
    for i in order:
        empi, acc, density = exams[i]
        for _ in range(findings[i]):
            before, after = rng.choice(clin_tails)
            side = rng.choice(("L", "R", "B", "L", "R"))
            asses = rng.choices(("N", "B", "A", "P", "S", "M", "K", "X"), (50, 20, 12, 8, 4, 2, 2, 2))[0]
            lines.append(before.format(row) + f"{empi},{acc},{side},{asses},{density}" + after)
            row += 1
    (root / TABLES / CLINICAL_CSV).write_text("\n".join(lines) + "\n", encoding="utf-8")
    del lines
    tables_s = time.perf_counter() - start

    start = time.perf_counter()
    base = root / image_folder if image_folder not in ("", ".") else root
    made: set[str] = set()
    flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC
    for tail in files:
        folder, _, _ = tail.rpartition("/")
        if folder not in made:
            os.makedirs(base / folder, exist_ok=True)
            made.add(folder)
        os.close(os.open(f"{base}/{tail}", flags, 0o644))
    files_s = time.perf_counter() - start
    info = {"version": VERSION, "scale": scale, "seed": seed, "image_folder": image_folder, "metadata_rows": n_meta,
            "clinical_rows": row, "image_exams": len(exams_with_images), "clinical_exams": len(exams),
            "patients": len({e for e, _, _ in exams_with_images}), "folders": len(made),
            "expected": dict(expected), "tables_s": tables_s, "files_s": files_s}
    (root / MARKER).write_text(json.dumps(info), encoding="utf-8")
    return info


# --- measured work, each in a fresh process -------------------------------------------------------

def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _hwm_kib() -> int:
    """The same peak as the kernel keeps it for this process image (VmHWM): a cross-check, since
    ru_maxrss after a (v)fork + exec also counts the parent's peak at the fork."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return 0


def child_listing(root: str, profile: bool) -> dict:
    from mammo_tui.data.described import list_described
    from mammo_tui.data.layouts import load_layout

    description = load_layout("embed")
    imports_kib = _peak_kib()
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        start = time.perf_counter()
        listing = profiler.runcall(list_described, description, root)
        wall = time.perf_counter() - start
        stats = pstats.Stats(profiler, stream=sys.stderr).strip_dirs()
        for key in ("tottime", "cumulative"):
            print(f"\n--- cProfile, top 25 by {key} ---", file=sys.stderr)
            stats.sort_stats(key).print_stats(25)
    else:
        start = time.perf_counter()
        listing = list_described(description, root)
        wall = time.perf_counter() - start
    kinds = Counter(p.kind for p in listing.problems)
    return {"wall_s": wall, "peak_kib": _peak_kib(), "hwm_kib": _hwm_kib(), "imports_kib": imports_kib,
            "rows_read": listing.rows_read,
            "candidates": len(listing.candidates), "problems": dict(kinds), "notes": listing.notes,
            "example": next((p.message for p in listing.problems if p.kind == "missing_file"), "")}


def child_pandas(root: str) -> dict:
    import pandas as pd

    imports_kib = _peak_kib()
    start = time.perf_counter()
    tables = [pd.read_csv(Path(root) / TABLES / name, low_memory=False) for name in (METADATA_CSV, CLINICAL_CSV)]
    wall = time.perf_counter() - start
    return {"wall_s": wall, "peak_kib": _peak_kib(), "hwm_kib": _hwm_kib(), "imports_kib": imports_kib,
            "shapes": [list(t.shape) for t in tables]}


def run_child(mode: str, root: Path, *extra: str) -> dict:
    """One measured (or setup) step in a fresh interpreter; its JSON answer. The group-id digests
    use a secret of their own under the dataset folder (no ~/.config/mammo-tui secret is created)
    unless one is configured."""
    env = dict(os.environ)
    if not env.get("MAMMO_TUI_CONFIG_DIR") and not env.get("MAMMO_TUI_SECRET_FILE"):
        env["MAMMO_TUI_CONFIG_DIR"] = str(root / ".mammo-tui-config")
    command = [sys.executable, __file__, f"--child-{mode}", str(root), *extra]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.stderr.strip():
        print(done.stderr, end="" if done.stderr.endswith("\n") else "\n", file=sys.stderr)
    if done.returncode != 0:
        raise SystemExit(f"the {mode} process failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- driver ---------------------------------------------------------------------------------------

def _mb(kib: float) -> str:
    return f"{kib * 1024 / 1e6:,.0f} MB"


def _prepare(root: Path, args) -> dict:
    marker = root / MARKER
    settings = {"version": VERSION, "scale": args.scale, "seed": args.seed, "image_folder": args.image_folder}
    if marker.is_file():
        info = json.loads(marker.read_text(encoding="utf-8"))
        if all(info.get(key) == value for key, value in settings.items()):
            print(f"reusing {root} (generated earlier with the same settings)")
            return info
        print(f"{root}: generated with other settings; regenerating")
        for entry in root.iterdir():  # only what this script writes
            if entry.name in (METADATA_CSV, CLINICAL_CSV, MARKER):
                entry.unlink()
            elif entry.name in (TABLES, "cohort_1", info.get("image_folder")) and entry.is_dir():
                shutil.rmtree(entry)
    elif root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty and was not generated by this script; give an empty or new folder")
    root.mkdir(parents=True, exist_ok=True)
    # its own process: the writer's peak memory must not count in the measured processes' ru_maxrss
    # (a child's ru_maxrss includes its parent's peak at the fork)
    return run_child("generate", root, json.dumps(settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help=f"size (1.0 = {CLINICAL_ROWS:,} clinical / {METADATA_ROWS:,} metadata rows)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", help="write (or reuse) the dataset here and keep it")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-folder", default="images",
                        help="where the image tree (cohort_1/...) goes under the dataset folder ('.' = at the top)")
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas.read_csv floor")
    parser.add_argument("--profile", action="store_true", help="add one cProfile run of the listing (to stderr)")
    parser.add_argument("--child-listing", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--child-pandas", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--child-generate", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("settings", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_generate:
        settings = json.loads(args.settings)
        print(json.dumps(write_dataset(Path(args.child_generate), settings["scale"], settings["seed"],
                                       settings["image_folder"])))
        return
    if args.child_listing:
        print(json.dumps(child_listing(args.child_listing, args.profile)))
        return
    if args.child_pandas:
        print(json.dumps(child_pandas(args.child_pandas)))
        return

    if args.dir:
        root, cleanup = Path(args.dir).expanduser().resolve(), None
    else:
        root = Path(tempfile.mkdtemp(prefix="mammo-bench-listing-"))
        cleanup = None if args.keep else root
    try:
        info = _prepare(root, args)
        sizes = {name: (root / TABLES / name).stat().st_size for name in (METADATA_CSV, CLINICAL_CSV)}
        print(f"dataset {root} (scale {args.scale}; tables in {TABLES}/):")
        print(f"  {METADATA_CSV}: {info['metadata_rows']:,} rows x {len(_META_FILLER) + 7} columns, "
              f"{sizes[METADATA_CSV] / 1e6:,.0f} MB; {info['image_exams']:,} exams, {info['patients']:,} patients")
        print(f"  {CLINICAL_CSV}: {info['clinical_rows']:,} rows x {len(_CLIN_FILLER) + 5} columns, "
              f"{sizes[CLINICAL_CSV] / 1e6:,.0f} MB; {info['clinical_exams']:,} exams")
        print(f"  setup: tables {info['tables_s']:.1f} s; {info['metadata_rows']:,} empty image files in "
              f"{info['folders']:,} folders under {info['image_folder']}/ {info['files_s']:.1f} s (not measured)")

        listings = [run_child("listing", root) for _ in range(args.repeats)]
        floors = [] if args.no_pandas else [run_child("pandas", root) for _ in range(args.repeats)]
        if args.profile:
            print("\ncProfile run of the listing (own and cumulative time, on stderr):", flush=True)
            profiled = run_child("listing", root, "--profile")
            print(f"  profiled run: {profiled['wall_s']:.1f} s (cProfile overhead included)")
    finally:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
            print(f"removed {cleanup}" + ("" if not cleanup.exists() else " (NOT fully: check it)"))
        elif not args.dir:
            print(f"kept {root} (--keep)")

    def line(name: str, runs: list[dict]) -> tuple[float, float]:
        wall = statistics.median(r["wall_s"] for r in runs)
        peak = statistics.median(r["peak_kib"] for r in runs)
        each = ", ".join(f"{r['wall_s']:.1f} s / {_mb(r['peak_kib'])}" for r in runs)
        print(f"{name:<34}{wall:>9.1f} s{_mb(peak):>12}{_mb(runs[0]['imports_kib']):>14}   ({each})")
        skewed = [r for r in runs if r.get("hwm_kib") and abs(r["peak_kib"] - r["hwm_kib"]) > 0.05 * r["hwm_kib"]]
        if skewed:
            print(f"{'':<34}warning: ru_maxrss and VmHWM disagree ({', '.join(_mb(r['hwm_kib']) for r in skewed)} "
                  "VmHWM); the parent's peak leaked into ru_maxrss")
        return wall, peak

    print(f"\n{'':<34}{'median':>11}{'peak RSS':>12}{'imports alone':>14}   (each run: time / peak RSS)")
    wall, peak = line("list_described(embed)", listings)
    if floors:
        floor_wall, floor_peak = line("pandas.read_csv, both, all columns", floors)
        print(f"listing / pandas floor: {wall / floor_wall:.1f}x the time, {peak / floor_peak:.1f}x the memory")

    first = listings[0]
    expected = info["expected"]
    problems = Counter(first["problems"])
    print(f"\nrows read {first['rows_read']:,}; candidates {first['candidates']:,}; left out: "
          + (", ".join(f"{kind} {n:,}" for kind, n in problems.most_common()) or "none"))
    for note in first["notes"]:
        print(f"  note: {note}")
    counts_ok = (first["rows_read"] == info["metadata_rows"] and first["candidates"] == expected.get("candidates", 0)
                 and problems.get("view_excluded", 0) == expected.get("view_excluded", 0)
                 and problems.get("no_label", 0) == expected.get("no_label", 0)
                 and set(problems) <= {"view_excluded", "no_label"})
    print(f"expected (as generated): candidates {expected.get('candidates', 0):,}, view_excluded "
          f"{expected.get('view_excluded', 0):,}, no_label {expected.get('no_label', 0):,}, nothing else")
    if problems.get("missing_file"):
        print(f"  every file exists, yet {problems['missing_file']:,} rows are missing_file; first: {first['example']}")
    verdicts = [("counts as generated", counts_ok),
                (f"time under {TARGET_S:.0f} s (median {wall:.1f} s)", wall < TARGET_S),
                (f"peak RSS under {TARGET_BYTES / 1e9:.0f} GB (median {_mb(peak)})", peak * 1024 < TARGET_BYTES)]
    for what, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")


if __name__ == "__main__":
    main()
