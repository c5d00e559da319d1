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

import sys
from pathlib import Path

from page_screenshot import save_page_png


def main(out: Path, images: Path) -> None:
    # the runs, the gate, data quality and the first three scores' drift: the top two thirds
    save_page_png(out / "history" / "history_report.html", images / "history-report.png", height=3620)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
