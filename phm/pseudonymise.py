"""Pseudonymous ids that only the patient's own practice can re-identify.

Each practice has its own key, derived from the ICB's pseudonymisation key:
``practice_key = HMAC-SHA256(icb_key, "phm practice key v1:" + practice id)``. A patient's id on a
list is ``HMAC-SHA256(practice_key, patient id)``, as 20 hex characters (80 bits: no collisions
among 60 million patients in practice). The practice is given its own key (``phm`` never writes
keys to a list, a log or MLflow) and re-identifies by computing the ids of its registered
patients; without the key an id reveals nothing, and one practice's key says nothing about
another's patients. A different ICB key gives unlinkable ids.

The ICB key comes only from the environment (``PHM_PSEUDONYMISATION_KEY``), never from a file
in the repository or the configuration.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import polars as pl

from phm.exceptions import ConfigError

KEY_VARIABLE = "PHM_PSEUDONYMISATION_KEY"
MIN_KEY_BYTES = 32
ID_HEX_CHARS = 20


def icb_key(environ: dict[str, str] | None = None, icb: str | None = None) -> bytes:
    """The ICB's key from the environment; a clear error if it is missing or weak.

    ``PHM_PSEUDONYMISATION_KEY_<ICB>`` (e.g. ``PHM_PSEUDONYMISATION_KEY_QXX``) wins over
    ``PHM_PSEUDONYMISATION_KEY``, so one Prefect worker can run several ICBs, each with its own key.
    """
    environ = environ if environ is not None else os.environ
    names = ([f"{KEY_VARIABLE}_{icb}"] if icb else []) + [KEY_VARIABLE]
    name = next((n for n in names if environ.get(n)), None)
    if name is None:
        raise ConfigError(f"{' or '.join(names)} is not set: lists carry pseudonymous ids and cannot be made "
                          f"without the ICB's key (at least {MIN_KEY_BYTES} bytes, e.g. from "
                          "`python -c \"import secrets; print(secrets.token_hex(32))\"`)")
    return check_key(name, environ[name])


MIN_DISTINCT_CHARACTERS = 12


def check_key(name: str, value: str) -> bytes:
    """The key's bytes, refused (naming the variable, never echoing the key) when it is not
    UTF-8 (the environment would hand over undecodable bytes), carries surrounding white space
    (a trailing newline from ``echo`` or a file would silently change every pseudonym), is
    shorter than 32 characters, or has fewer than 12 distinct characters (32 spaces or one
    letter repeated: guessable, so pseudonyms could be recomputed by anyone)."""
    try:
        key = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{name} is not UTF-8 text: set it from a generated key, e.g. "
                          "`python -c \"import secrets; print(secrets.token_hex(32))\"`") from None
    if value != value.strip():
        raise ConfigError(f"{name} begins or ends with white space (a newline?): every pseudonym "
                          "would change with it; set the key without it")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{name} is too short: at least {MIN_KEY_BYTES} characters")
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        raise ConfigError(f"{name} has fewer than {MIN_DISTINCT_CHARACTERS} distinct characters: "
                          "use a generated key, e.g. `python -c \"import secrets; "
                          "print(secrets.token_hex(32))\"`")
    return key


def practice_key(key: bytes, practice: str) -> bytes:
    return hmac.new(key, f"phm practice key v1:{practice}".encode(), hashlib.sha256).digest()


def pseudonym(key_of_practice: bytes, patient_id: int | str) -> str:
    return hmac.new(key_of_practice, str(patient_id).encode(), hashlib.sha256).hexdigest()[:ID_HEX_CHARS]


def pseudonymise(frame: pl.DataFrame, key: bytes, patient: str = "patient_id",
                 practice: str = "practice_pseudo_id") -> pl.Series:
    """The pseudonym of every row's patient under its practice's key."""
    keys = {p: practice_key(key, str(p)) for p in frame[practice].unique().to_list()}
    return pl.Series("pseudonym", [pseudonym(keys[p], i) for p, i in
                                   zip(frame[practice].to_list(), frame[patient].to_list(), strict=True)],
                     dtype=pl.String)
