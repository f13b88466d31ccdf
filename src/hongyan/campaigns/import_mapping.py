"""The column mapping and options of a contact-file import, as the API takes them and the job stores them:
rows.ColumnMapping plus the time-zone column, and what to do with numbers already in the address book."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phonenumbers import SUPPORTED_REGIONS

from hongyan.campaigns.rows import ColumnMapping, FieldColumn
from hongyan.core.errors import InvalidRequest, Unprocessable


# -- mapping --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ImportMapping:
    """rows.ColumnMapping plus the time-zone column (a contact's override), as stored on the job."""

    columns: ColumnMapping
    time_zone: int | None = None

    def validate(self, width: int) -> None:
        self.columns.validate(width)
        if self.time_zone is not None:
            used = [
                self.columns.phone,
                self.columns.name,
                self.columns.tags,
                *(f.index for f in self.columns.fields),
            ]
            if not 0 <= self.time_zone < width:
                raise Unprocessable(
                    "column_out_of_range", "A mapped column is not in the file.", field="mapping.time_zone"
                )
            if self.time_zone in used:
                raise Unprocessable(
                    "column_mapped_twice", "Each column can be mapped once.", field="mapping.time_zone"
                )

    def to_json(self) -> dict[str, Any]:
        c = self.columns
        return {
            "phone": c.phone,
            "name": c.name,
            "tags": c.tags,
            "time_zone": self.time_zone,
            "fields": [{"index": f.index, "name": f.name, "type": f.type} for f in c.fields],
            "header_rows": c.header_rows,
        }


def _column(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(
            "invalid_type", f"mapping.{key} is a 0-based column number.", field=f"mapping.{key}"
        )
    return value


def mapping_from_json(data: dict[str, Any] | None) -> ImportMapping:
    """The JSON shape of `ImportMapping.to_json` (what the API takes and the job stores) → a mapping."""
    data = data or {}
    phone = _column(data, "phone")
    if phone is None:
        raise Unprocessable(
            "phone_column_required", "Choose the column that holds the phone numbers.", field="mapping.phone"
        )
    fields = []
    for i, f in enumerate(data.get("fields") or []):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or _column(f, "index") is None:
            raise InvalidRequest(
                "invalid_type", "A field is {index, name, type}.", field=f"mapping.fields[{i}]"
            )
        fields.append(FieldColumn(f["index"], f["name"].strip(), f.get("type") or "text"))
    header_rows = data.get("header_rows", 1)
    if header_rows not in (0, 1):
        raise InvalidRequest(
            "invalid_value",
            "header_rows is 1 (the first row names the columns) or 0.",
            field="mapping.header_rows",
        )
    return ImportMapping(
        ColumnMapping(
            phone=phone,
            name=_column(data, "name"),
            tags=_column(data, "tags"),
            fields=tuple(fields),
            header_rows=header_rows,
        ),
        _column(data, "time_zone"),
    )


@dataclass(frozen=True, slots=True)
class ImportOptions:
    update_existing: bool = True  # False: numbers already in the address book are left alone (skipped)
    default_region: str = "CN"  # for numbers written without +country code
    consent_source: str | None = None  # recorded on contacts that have no consent yet

    def to_json(self) -> dict[str, Any]:
        return {
            "update_existing": self.update_existing,
            "default_region": self.default_region,
            "consent_source": self.consent_source,
        }


def options_from_json(data: dict[str, Any] | None, *, default_region: str) -> ImportOptions:
    data = data or {}
    region = str(data.get("default_region") or default_region).upper()
    if region not in SUPPORTED_REGIONS:
        raise Unprocessable(
            "invalid_region",
            f"'{region[:8]}' is not a region code such as CN.",
            field="options.default_region",
        )
    consent = data.get("consent_source")
    if consent is not None and (not isinstance(consent, str) or len(consent) > 64):
        raise InvalidRequest(
            "invalid_value", "consent_source is text up to 64 characters.", field="options.consent_source"
        )
    return ImportOptions(bool(data.get("update_existing", True)), region, (consent or "").strip() or None)
