"""The screenshot of the ethnicity data-quality report in docs/ethnicity.md, in headless Chromium.

    uv run phm synth --patients 8000 --seed 42 --pcns 3 --hospital-ethnicity 0.5 \
        --ethnicity-unrecorded-practice Z10002=0.35 --ethnicity-misrecording-practice Z10005=0.3 --out /tmp/e/extA
    uv run phm synth --patients 8000 --seed 43 --pcns 3 --hospital-ethnicity 0.5 \
        --ethnicity-unrecorded-practice Z10002=0.35 --ethnicity-misrecording-practice Z10005=0.3 --out /tmp/e/extB
    for x in A B; do uv run phm run --extract /tmp/e/ext$x --out /tmp/e/out --config C.toml --force; done
    uv run python docs/make_ethnicity_screenshot.py /tmp/e/out docs/images

(C.toml: ``[run] stale_extract = "mark"`` and an ``[[audit.signoff]]``, as tests/signoff.py
writes.) The page is ``<out>/audit/ethnicity_quality.html`` as the second run wrote it (its trend
has the first run); Chromium prints it to a tall PNG, cropped to what the page drew, to its top
and scaled to 3/4.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main(out: Path, images: Path, height: int = 2700) -> None:
    from PIL import Image, ImageOps

    report = (out / "audit" / "ethnicity_quality.html").resolve()
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
        image = image.crop((0, 0, image.size[0], min(image.size[1], height)))
        image = image.resize((image.size[0] * 3 // 4, image.size[1] * 3 // 4), Image.LANCZOS)
        images.mkdir(parents=True, exist_ok=True)
        image = image.quantize(colors=64)  # tables and text: a small palette keeps the file small
        image.save(images / "ethnicity-report.png", optimize=True)
    print(f"{report} -> {images / 'ethnicity-report.png'} ({image.size[0]} x {image.size[1]})")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
