"""The screenshots of a PCN workbook in docs/lists.md, as LibreOffice renders it.

    phm demo --patients 12000 --out /tmp/demo12k          # any published lists folder will do
    apt-get install libreoffice-calc-nogui poppler-utils  # Debian's LibreOffice, headless
    uv run python docs/make_workbook_screenshots.py /tmp/demo12k/lists docs/images

The workbook is the one phm published (phm/workbook.py), copied with only its Read me, its first
practice's sheet and the summary, each sheet set to print on A3 landscape one page wide (so a
page shows every column); LibreOffice (soffice --headless) turns it into a PDF and pdftoppm
turns the first page of each sheet into a PNG, cropped to its top.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main(lists: Path, images: Path) -> None:
    from openpyxl import load_workbook
    from PIL import Image, ImageOps

    manifest = json.loads((lists / "lists_manifest.json").read_text())
    pcn, names = sorted(manifest["files"].items())[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        book = load_workbook(lists / names["xlsx"])
        sheets = ["Read me", book.sheetnames[2], "summary"]
        for name in book.sheetnames:
            if name not in sheets:
                del book[name]
        for sheet in book.worksheets:
            sheet.page_setup.orientation = "landscape"
            sheet.page_setup.paperSize = sheet.PAPERSIZE_A3
            sheet.sheet_properties.pageSetUpPr.fitToPage = True
            sheet.page_setup.fitToWidth, sheet.page_setup.fitToHeight = 1, 0
        book.save(tmp / "workbook.xlsx")
        subprocess.run(["soffice", "--headless", "--convert-to", "pdf", "--outdir", str(tmp), str(tmp / "workbook.xlsx")],
                       check=True, capture_output=True, timeout=300)
        subprocess.run(["pdftoppm", "-r", "150", "-png", str(tmp / "workbook.pdf"), str(tmp / "page")], check=True)
        pages = sorted(tmp.glob("page-*.png"))
        images.mkdir(parents=True, exist_ok=True)
        # the Read me (page 1) and the practice's first page (page 2 when the Read me fits on one)
        for page, out, share in ((pages[0], "workbook-read-me.png", (1.0, 1.0)),
                                 (pages[1], "workbook-practice-sheet.png", (0.62, 0.45))):
            image = Image.open(page).convert("RGB")
            image = image.crop(ImageOps.invert(image.convert("L")).getbbox())  # the printed part of the page
            width, height = image.size
            image.crop((0, 0, int(width * share[0]), int(height * share[1]))).save(images / out)
    print(f"{pcn}: {', '.join(sheets)} -> {images}/workbook-read-me.png, workbook-practice-sheet.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
