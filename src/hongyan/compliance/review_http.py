"""HTTP pieces shared by the signature and template routes (and their console pages): the decision body,
the multipart upload of a supporting document, and serving a document's bytes safely."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile
from starlette.responses import Response

from hongyan.accounts import permissions as p
from hongyan.accounts.keys import AccountContext
from hongyan.api.body import require_multipart
from hongyan.api.deps import current_account
from hongyan.compliance import reviews
from hongyan.compliance.documents import load_document
from hongyan.compliance.models import ComplianceDocument
from hongyan.core.clock import isoformat
from hongyan.core.errors import NotFound, Unprocessable

CallingAccount = Annotated[AccountContext, Depends(current_account)]


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[StrictStr, Field(max_length=1000)] | None = None


DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "PDF, PNG or JPEG (checked by content), at most HONGYAN_DOCUMENT_MAX_BYTES.",
                        }
                    },
                }
            }
        },
    }
}


def authority_for(ctx: AccountContext, permission: str) -> p.Authority:
    authority = p.Authority.of_api(ctx)
    p.require(authority, permission)
    return authority


def document_json(doc: Any, url: str) -> dict[str, Any]:
    return {
        "id": doc.id,
        "filename": doc.filename,
        "content_type": doc.content_type,
        "size": doc.size,
        "url": f"{url}/{doc.id}",
    }


def history_json(entries: list[reviews.HistoryEntry]) -> list[dict[str, Any]]:
    return [
        {
            "at": isoformat(e.at),
            "action": e.action,
            "actor": {"type": e.actor_type, "label": e.actor_label},
            "reason": e.reason,
        }
        for e in entries
    ]


def document_response(doc: ComplianceDocument, *, inline: bool = False) -> Response:
    """The bytes with their detected type; attachment unless `inline` (images shown in the console). The
    sandbox CSP keeps anything a document might carry from running as this site."""
    disposition = "inline" if inline and doc.content_type.startswith("image/") else "attachment"
    return Response(
        doc.data,
        media_type=doc.content_type,
        headers={
            "Content-Disposition": f"{disposition}; filename=\"{doc.id}\"; filename*=UTF-8''{quote(doc.filename)}",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )


async def owned_document(
    session: AsyncSession, *, owner_kind: str, owner_id: str, document_id: str, account_id: str | None
) -> ComplianceDocument:
    doc = await load_document(session, document_id, account_id=account_id)
    if doc.owner_kind != owner_kind or doc.owner_id != owner_id:
        raise NotFound("document_not_found", "No such document.", field="document_id")
    return doc


async def read_upload(request: Request, max_bytes: int) -> tuple[str | None, bytes]:
    """The `file` field of a multipart upload, read up to one byte over the limit (the check says how big)."""
    require_multipart(request)
    async with request.form(max_files=1, max_fields=5) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Unprocessable("field_required", "Attach the document as the `file` field.", field="file")
        return upload.filename, await upload.read(max_bytes + 1)
