"""One HTML page the pipeline writes, as a PNG for the docs: headless Chromium prints it to a tall
image, cropped to what the page drew, cut at ``height`` pixels and scaled to 3/4. Used by
docs/make_history_screenshot.py and docs/make_ethnicity_screenshot.py (run them as scripts: this
folder is then on the import path)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def save_page_png(page: Path, png: Path, height: int, colors: int | None = None) -> None:
    from PIL import Image, ImageOps

    page = page.resolve()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("headless Chromium is needed: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "page.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={shot}", "--window-size=1280,5200", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
        image = Image.open(shot).convert("RGB")
        image = image.crop(ImageOps.invert(image.convert("L")).getbbox())  # what the page drew
        image = image.crop((0, 0, image.size[0], min(image.size[1], height)))
        image = image.resize((image.size[0] * 3 // 4, image.size[1] * 3 // 4), Image.LANCZOS)
        if colors:
            image = image.quantize(colors=colors)  # tables and text: a small palette keeps the file small
        png.parent.mkdir(parents=True, exist_ok=True)
        image.save(png, optimize=True)
    print(f"{page} -> {png} ({image.size[0]} x {image.size[1]})")
