"""Authenticating the config's plaintext envelope (docs/vault-format.md §4).

The config object is JSON with a few plaintext fields (``recovault``, ``id``, ``created``) beside the sealed
settings. The settings plaintext carries a copy of every other envelope field under ``"envelope"``, and
opening compares the two, so editing ``created`` (or adding a field) is reported, not silently believed.
Configs written before this (no ``"envelope"`` in the settings) still open; ``authenticated`` says which.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple

from ..errors import CorruptData

__all__ = ["ENVELOPE_KEY", "OpenedSettings", "bind", "verify"]

ENVELOPE_KEY = "envelope"
SEALED_FIELD = "settings"  # the envelope field holding the sealed blob, the one field not copied


class OpenedSettings(NamedTuple):
    settings: Dict[str, Any]  # the settings document, without the envelope copy
    authenticated: bool  # False for a config written before the envelope was bound


def _plain_fields(doc: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in doc.items() if k != SEALED_FIELD}


def bind(settings: Mapping[str, Any], doc: Mapping[str, Any]) -> Dict[str, Any]:
    """The settings document to seal: ``settings`` plus a copy of every field of the config ``doc`` but the
    sealed blob itself."""
    return {**settings, ENVELOPE_KEY: _plain_fields(doc)}


def verify(sealed_settings: Mapping[str, Any], doc: Mapping[str, Any], where: str) -> OpenedSettings:
    """Compare the sealed copy of the envelope with the config ``doc``; ``CorruptData`` naming the changed
    fields if they differ; ``ValueError`` if the sealed document is not an object."""
    if not isinstance(sealed_settings, dict):
        raise ValueError("the sealed settings are not a JSON object")
    settings = {k: v for k, v in sealed_settings.items() if k != ENVELOPE_KEY}
    if ENVELOPE_KEY not in sealed_settings:
        return OpenedSettings(settings, False)
    sealed, plain = sealed_settings[ENVELOPE_KEY], _plain_fields(doc)
    if not isinstance(sealed, dict) or sealed != plain:
        sealed = sealed if isinstance(sealed, dict) else {}
        changed = sorted(k for k in set(sealed) | set(plain) if sealed.get(k, None) != plain.get(k, None)
                         or (k in sealed) != (k in plain))
        raise CorruptData(f"the vault config at {where} was changed after it was written: field(s) "
                          f"{', '.join(changed) or '?'} do not match the sealed copy (tampered with or damaged)")
    return OpenedSettings(settings, True)
