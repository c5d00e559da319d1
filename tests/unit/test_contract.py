from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from phm.contract import TABLES, ExtractMetadata, render_markdown
from phm.exceptions import ExtractError

DOC = Path(__file__).resolve().parents[2] / "docs" / "extract-contract.md"


def test_the_contract_document_is_generated_from_the_code():
    assert DOC.read_text() == render_markdown() + "\n", "run: phm contract --write docs/extract-contract.md"


def test_every_table_has_a_staging_model_and_a_suite():
    root = Path(__file__).resolve().parents[2]
    for name in TABLES:
        assert (root / "sql" / "staging" / f"stg_{name}.sql").is_file()
        assert (root / "expectations" / f"{name}.json").is_file()


def test_metadata_round_trips(tmp_path):
    ExtractMetadata(dt.date(2026, 3, 31), "IMD2025", "x").write(tmp_path)
    assert ExtractMetadata.read(tmp_path) == ExtractMetadata(dt.date(2026, 3, 31), "IMD2025", "x")


def test_metadata_that_is_not_json_names_the_file(tmp_path):
    (tmp_path / "extract.json").write_text("{not json")
    with pytest.raises(ExtractError, match=r"extract.json: not valid UTF-8 JSON"):
        ExtractMetadata.read(tmp_path)
