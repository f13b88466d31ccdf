"""Liveness and readiness endpoints (Prometheus metrics arrive with production mode)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text

from hongyan.api.responses import JsonResponse

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> JsonResponse:
    return JsonResponse({"status": "ok"})


@router.get("/ready", summary="Readiness: database reachable, workers running")
async def ready(request: Request) -> JsonResponse:
    checks: dict[str, str] = {}
    try:
        async with request.app.state.db.read() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports, it does not raise
        checks["database"] = f"error: {type(exc).__name__}"
    runtime = getattr(request.app.state, "runtime", None)
    checks["workers"] = "embedded" if runtime is not None else "external"
    ok = checks["database"] == "ok"
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)
