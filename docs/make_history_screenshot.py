"""The screenshot of the history report in docs/operations.md, in headless Chromium.

    uv run phm synth --patients 12000 --seed 42 --profile diverse_urban --pcns 3 --out /tmp/h/extA
    uv run phm synth --patients 12000 --seed 43 --profile diverse_urban --pcns 3 --out /tmp/h/extB
    uv run phm synth --patients 12000 --seed 43 --profile diverse_urban --pcns 3 \
        --measurement-access Black=0.3 --out /tmp/h/extC          # the same population, Black under-measured
    for x in A B C; do uv run phm run --extract /tmp/h/ext$x --out /tmp/h/out --config C.toml --force; done
    uv run python docs/make_history_screenshot.py /tmp/h/out docs/images

(C.toml: ``[run] stale_extract = "mark"`` and an ``[[audit.signoff]]``, as tests/signoff.py
writes: synthetic extracts are dated 2026-03-31 and a 12,000-patient audit can WARN.) The page
is ``<out>/history/history_report.html`` as the last run wrote it; Chromium (apt-get install
chromium) prints it to a tall PNG, cropped to its top two thirds and scaled to 3/4.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main(out: Path, images: Path) -> None:
    from PIL import Image, ImageOps

    report = (out / "history" / "history_report.html").resolve()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("headless Chromium is needed: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "page.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={shot}", "--window-size=1280,5200", report.as_uri()],
                       check=True, capture_output=True, timeout=120)
        image = Image.open(shot).convert("RGB")
        image = image.crop(ImageOps.invert(image.convert("L")).getbbox())  # what the page drew
        # the runs, the gate, data quality and the first three scores' drift: the top two thirds
        image = image.crop((0, 0, image.size[0], min(image.size[1], 3620)))
        image = image.resize((image.size[0] * 3 // 4, image.size[1] * 3 // 4), Image.LANCZOS)
        images.mkdir(parents=True, exist_ok=True)
        image.save(images / "history-report.png", optimize=True)
    print(f"{report} -> {images / 'history-report.png'} ({image.size[0]} x {image.size[1]})")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
