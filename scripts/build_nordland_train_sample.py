"""Build the embedded nordland-train-sample (GSV-Cities layout) from ../shared/data/nordland_64x32.

A place is one frame index f: the summer and winter images of frames f-1, f and f+1 (6 images, two
seasons and a little viewpoint change). Places are every 3rd frame, so no image is in two places, and
none lies within 20 frames of the embedded evaluation sample (nordland-sample: frames 1200..1799 of the
sorted list), so training never sees an evaluation image or its neighbours. Images are re-encoded as
JPEG (the GSV-Cities layout names .jpg files); the name follows gsv-cities' get_img_name:

    Images/nordland/nordland_<place_id:07d>_<year>_<month:02d>_<northdeg:03d>_<lat>_<lon>_<panoid>.jpg

Run from the repository root:

    python scripts/build_nordland_train_sample.py [SOURCE] [--places 200]
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
from PIL import Image

DEST = Path(__file__).resolve().parents[1] / "vprbench" / "data" / "nordland_train_sample"
EVAL_START, EVAL_COUNT, MARGIN = 1200, 600, 20
SEASONS = {"summer": 7, "winter": 1}  # month of each season's footage, as the GSV 'month' column


def build(source: Path, places: int, dest: Path = DEST) -> int:
    names = sorted(p.name for p in (source / "summer").glob("images-*.png"))
    lo, hi = EVAL_START - MARGIN, EVAL_START + EVAL_COUNT + MARGIN
    centres = [c for c in range(1, len(names) - 1, 3) if c + 1 < lo or c - 1 >= hi]
    step = max(1, len(centres) // places)
    centres = centres[::step][:places]
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "Images" / "nordland").mkdir(parents=True)
    (dest / "Dataframes").mkdir()
    rows = []
    for place_id, centre in enumerate(centres):
        for frame in (centre - 1, centre, centre + 1):
            for season, month in SEASONS.items():
                panoid = f"{season}{Path(names[frame]).stem.split('-')[1]}"
                row = {"place_id": place_id, "year": 2013, "month": month, "northdeg": 0,
                       "city_id": "nordland", "lat": 0.0, "lon": 0.0, "panoid": panoid}  # fmt: skip
                rows.append(row)
                name = (
                    f"nordland_{place_id:07d}_{row['year']:04d}_{month:02d}_{0:03d}_"
                    f"{row['lat']}_{row['lon']}_{panoid}.jpg"
                )
                with Image.open(source / season / names[frame]) as im:
                    im.convert("RGB").save(dest / "Images" / "nordland" / name, quality=90)
    pd.DataFrame(rows).to_csv(dest / "Dataframes" / "nordland.csv", index=False)
    return len(centres)


if __name__ == "__main__":
    from build_nordland_sample import source_parser  # the script's own folder is on sys.path

    parser = source_parser(__doc__)
    parser.add_argument("--places", type=int, default=200)
    args = parser.parse_args()
    n = build(args.source, args.places)
    print(f"wrote {n} places to {DEST}")
