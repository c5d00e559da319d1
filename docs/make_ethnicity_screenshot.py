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

import sys
from pathlib import Path

from page_screenshot import save_page_png


def main(out: Path, images: Path, height: int = 2700) -> None:
    save_page_png(out / "audit" / "ethnicity_quality.html", images / "ethnicity-report.png", height, colors=64)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
