"""Supporting documents for reviews (business license, trademark certificate, authorization letter).

The type is decided by the file's first bytes, never by its name or the browser's claim, and only PDF,
PNG and JPEG are accepted; the size is capped (HONGYAN_DOCUMENT_MAX_BYTES); the bytes are sealed at rest
(EncryptedBytes) because licences carry people's names and ID numbers. Reviewers and the owning account
can download a document; nobody else can find it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.compliance.models import ComplianceDocument
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import NotFound, Unprocessable

OWNER_KINDS = ("signature", "template", "kyc")
MAX_DOCUMENTS_PER_OWNER = 5

# magic numbers: PDF 1.7 §7.5.2 "%PDF-", PNG signature (RFC 2083 §3.1), JPEG SOI marker FF D8 FF
_MAGIC = ((b"%PDF-", "application/pdf", ".pdf"), (b"\x89PNG\r\n\x1a\n", "image/png", ".png"),
          (b"\xff\xd8\xff", "image/jpeg", ".jpg"))
_UNSAFE_NAME = re.compile(r"[^\w.\- ()\u4e00-\u9fff]+")


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: str
    filename: str
    content_type: str
    size: int


def detect_type(data: bytes) -> str | None:
    """The content type by magic bytes (PDF, PNG, JPEG), or None."""
    for magic, content_type, _ in _MAGIC:
        if data.startswith(magic):
            return content_type
    return None


def safe_filename(name: str | None, content_type: str) -> str:
    """A display name without path parts or control characters, ending in the detected type's extension."""
    base = (name or "document").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_NAME.sub("_", base).strip(" ._")[:120] or "document"
    ext = next(e for _, t, e in _MAGIC if t == content_type)
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return f"{stem}{ext}"


def check_document(data: bytes, *, max_bytes: int, field: str = "document") -> str:
    """Validate one upload; returns its detected content type or raises a 422 naming the field."""
    if not data:
        raise Unprocessable("document_empty", "The uploaded file is empty.", field=field)
    if len(data) > max_bytes:
        raise Unprocessable(
            "document_too_large",
            f"The file has {len(data):,} bytes; the limit is {max_bytes:,} bytes ({max_bytes // (1024 * 1024)} MB).",
            field=field,
        )
    content_type = detect_type(data)
    if content_type is None:
        raise Unprocessable(
            "document_type_not_allowed", "Upload a PDF, PNG or JPEG file (the file's content is none of these).",
            field=field,
        )
    return content_type


async def store_document(
    session: AsyncSession, *, account_id: str, owner_kind: str, owner_id: str, filename: str | None, data: bytes,
    max_bytes: int, field: str = "document",
) -> DocumentInfo:
    """Check and store one document for a signature, template or KYC application (same transaction)."""
    assert owner_kind in OWNER_KINDS
    content_type = check_document(data, max_bytes=max_bytes, field=field)
    existing = (await session.scalars(select(ComplianceDocument.id).where(
        ComplianceDocument.owner_kind == owner_kind, ComplianceDocument.owner_id == owner_id))).all()
    if len(existing) >= MAX_DOCUMENTS_PER_OWNER:
        raise Unprocessable("too_many_documents", f"At most {MAX_DOCUMENTS_PER_OWNER} documents per application.",
                            field=field)
    doc = ComplianceDocument(
        id=ids.new_id("doc"), account_id=account_id, owner_kind=owner_kind, owner_id=owner_id,
        filename=safe_filename(filename, content_type), content_type=content_type, size=len(data),
        sha256=hashlib.sha256(data).hexdigest(), data=data, created_at=utcnow(),
    )
    session.add(doc)
    await session.flush()
    return DocumentInfo(doc.id, doc.filename, doc.content_type, doc.size)


async def documents_of(session: AsyncSession, owner_kind: str, owner_id: str) -> list[DocumentInfo]:
    rows = (await session.execute(
        select(ComplianceDocument.id, ComplianceDocument.filename, ComplianceDocument.content_type,
               ComplianceDocument.size)
        .where(ComplianceDocument.owner_kind == owner_kind, ComplianceDocument.owner_id == owner_id)
        .order_by(ComplianceDocument.id))).all()
    return [DocumentInfo(r.id, r.filename, r.content_type, r.size) for r in rows]


async def load_document(session: AsyncSession, document_id: str, *, account_id: str | None) -> ComplianceDocument:
    """A document with its bytes. `account_id` None: platform staff (any account); else only the account's own."""
    doc = await session.get(ComplianceDocument, document_id)
    if doc is None or (account_id is not None and doc.account_id != account_id):
        raise NotFound("document_not_found", "No such document.", field="document_id")
    return doc
