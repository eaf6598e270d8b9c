"""Phone carrier lookup (Telnyx Number Lookup): the line type and the carrier of a number."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel

from .client import BadShape, CallStats, ProviderClient


class Carrier(BaseModel):
    line_type: str | None
    name: str | None
    normalized: str | None


async def lookup(client: ProviderClient, e164: str, stats: CallStats) -> Carrier:
    return await client.call("GET", f"/v2/number_lookup/{quote(e164)}", params={"type": "carrier"}, stats=stats,
                             parse=_carrier)


def _carrier(body: Any) -> Carrier:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise BadShape("no data object in the answer")
    port = data.get("portability")
    port = port if isinstance(port, dict) else {}
    carrier = data.get("carrier")
    carrier = carrier if isinstance(carrier, dict) else {}
    line_type = port.get("line_type") or carrier.get("type")
    return Carrier(line_type=str(line_type).lower() if line_type else None, name=carrier.get("name"),
                   normalized=carrier.get("normalized_carrier"))
