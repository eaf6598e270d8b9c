"""DNC scrub: the agency API form (with its token refresh), and the national registry's list files.

It fails closed: when the answer cannot be had, the caller records ``UNKNOWN`` and not contactable,
never "not on the list".
"""

from __future__ import annotations

import os
import re
import stat
from functools import partial
from typing import Any

from pydantic import BaseModel

from ..errors import PermanentError, ProviderRejected
from .client import BadShape, CallStats, ProviderClient
from .config import Secret

IDENTITY_URL_ENV = "JOBRUNNER_DNC_IDENTITY_URL"


class Scrub(BaseModel):
    do_not_call: bool
    can_contact: bool
    reason: str | None = None


async def scrub(client: ProviderClient, digits: str, agent_number: str, stats: CallStats) -> Scrub:
    """Scrub a 10-digit number. On 401/403 the token is refreshed once (``POST {identity}/account/refresh``)
    and the call made again."""
    params = {"currentContextAgentNumber": agent_number, "phone": digits}
    try:
        return await client.call("GET", "/Leads/api/leads/scrubphonenumber", params=params, stats=stats, parse=_scrub)
    except ProviderRejected as exc:
        if exc.status not in (401, 403):
            raise
        await _refresh(client, stats)
        return await client.call("GET", "/Leads/api/leads/scrubphonenumber", params=params, stats=stats, parse=_scrub)


async def _refresh(client: ProviderClient, stats: CallStats) -> None:
    identity = os.environ.get(IDENTITY_URL_ENV) or client.config.extra.get("identity_url")
    if not identity:
        raise PermanentError(f"dnc refused the token and no identity service is set to refresh it: set "
                             f"{IDENTITY_URL_ENV} (or identity_url in [providers.dnc])")
    client.token = None  # refresh with the configured key
    token = await client.call("POST", "/account/refresh", stats=stats, parse=_token, base_url=str(identity))
    client.token = Secret(token)


def _token(body: Any) -> str:
    result = body.get("tokenResult") if isinstance(body, dict) else None
    token = result.get("access_token") if isinstance(result, dict) else None
    if not isinstance(token, str) or not token:
        raise BadShape("no tokenResult.access_token in the answer")
    return token


def _scrub(body: Any) -> Scrub:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("isDoNotCall"), bool):
        raise BadShape("no data.isDoNotCall in the answer")
    status = data.get("contactStatus")
    status = status if isinstance(status, dict) else {}
    can = status.get("canContact")
    return Scrub(do_not_call=data["isDoNotCall"], can_contact=bool(can) and not data["isDoNotCall"],
                 reason=status.get("reason"))


class LocalList:
    """The national registry's downloadable files: one 10-digit number a line. Loaded once per file
    version (path, size, mtime) and shared by every job of the daemon.

    The path comes from a request, so from a producer: only a regular file is read, of at most
    ``MAX_BYTES``, a line at most ``_LINE`` bytes at a time. Opening a FIFO would block the daemon's event
    loop until someone wrote to it (every job of the daemon stalled); a device such as /dev/zero, or a
    huge file without a newline, would be read into memory without end."""

    MAX_BYTES = 1 << 30  # about 90 million numbers
    _LINE = 256
    _cache: dict[tuple[str, int, int], frozenset[str]] = {}

    @classmethod
    def load(cls, path: str) -> frozenset[str]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens at once, unread
        except OSError as exc:
            raise PermanentError(f"the local DNC list {path} cannot be read: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise PermanentError(f"the local DNC list {path} is not a regular file; name a file of numbers, "
                                     "one a line")
            if st.st_size > cls.MAX_BYTES:
                raise PermanentError(f"the local DNC list {path} is {st.st_size} bytes; the limit is "
                                     f"{cls.MAX_BYTES} (split it by area code)")
        except BaseException:
            os.close(fd)
            raise
        with open(fd, "rb") as f:
            key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
            if key not in cls._cache:
                numbers = set()
                for line in iter(partial(f.readline, cls._LINE), b""):
                    digits = re.sub(rb"\D", b"", line)
                    if len(digits) == 11 and digits.startswith(b"1"):
                        digits = digits[1:]
                    if len(digits) == 10:
                        numbers.add(digits.decode())
                cls._cache.clear()  # one version of one list at a time is plenty
                cls._cache[key] = frozenset(numbers)
        return cls._cache[key]
