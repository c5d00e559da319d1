"""The screenshots of a PCN workbook in docs/lists.md, as LibreOffice renders it.

    phm demo --patients 12000 --out /tmp/demo12k          # any published lists folder will do
    apt-get install libreoffice-calc-nogui poppler-utils  # Debian's LibreOffice, headless
    uv run python docs/make_workbook_screenshots.py /tmp/demo12k/lists docs/images

The workbook is the one phm published (phm/workbook.py), copied once with only its Read me and
once with only its first practice's sheet, each set to print on A3 landscape one page wide (so a
page shows every column); LibreOffice (soffice --headless) turns each into a PDF and pdftoppm
turns its first page into a PNG, cropped to its top.
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
    sheets = []
    images.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # each sheet printed on its own, so that its first page is page 1 whatever the length of the
        # sheets before it (the Read me grew to two pages and the practice's sheet was taken from its
        # second)
        for index, (out, share) in enumerate((("workbook-read-me.png", (1.0, 1.0)),
                                              ("workbook-practice-sheet.png", (0.62, 0.45)))):
            book = load_workbook(lists / names["xlsx"])
            keep = "Read me" if index == 0 else book.sheetnames[2]
            sheets.append(keep)
            for name in book.sheetnames:
                if name != keep:
                    del book[name]
            sheet = book.worksheets[0]
            sheet.page_setup.orientation = "landscape"
            sheet.page_setup.paperSize = sheet.PAPERSIZE_A3
            sheet.sheet_properties.pageSetUpPr.fitToPage = True
            sheet.page_setup.fitToWidth, sheet.page_setup.fitToHeight = 1, 0
            book.save(tmp / f"sheet{index}.xlsx")
            subprocess.run(["soffice", "--headless", "--convert-to", "pdf", "--outdir", str(tmp),
                            str(tmp / f"sheet{index}.xlsx")], check=True, capture_output=True, timeout=300)
            subprocess.run(["pdftoppm", "-r", "150", "-png", "-f", "1", "-l", "1", str(tmp / f"sheet{index}.pdf"),
                            str(tmp / f"page{index}")], check=True)
            image = Image.open(next(tmp.glob(f"page{index}-*.png"))).convert("RGB")
            image = image.crop(ImageOps.invert(image.convert("L")).getbbox())  # the printed part of the page
            width, height = image.size
            image.crop((0, 0, int(width * share[0]), int(height * share[1]))).save(images / out)
    print(f"{pcn}: {', '.join(sheets)} -> {images}/workbook-read-me.png, workbook-practice-sheet.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
