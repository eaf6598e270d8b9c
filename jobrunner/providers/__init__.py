"""The paid APIs the handlers call, behind one object per daemon.

``Providers`` holds one ``ProviderClient`` per provider, all sharing the daemon's ``httpx.AsyncClient``
(connection pooling) and each with its own rate limit and concurrency cap, so every job calling a
provider shares its budget. Configuration: ``jobrunner.providers.config``. Retries: ``.client``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..errors import PermanentError
from .client import CallPolicy, CallStats, ProviderClient
from .config import ProviderConfig, call_policy, load

if TYPE_CHECKING:
    import httpx

__all__ = ["CallPolicy", "CallStats", "ProviderClient", "Providers"]


class Providers:
    def __init__(self, http: Callable[[], httpx.AsyncClient], configs: Mapping[str, ProviderConfig] | None = None,
                 policy: CallPolicy | None = None) -> None:
        self.configs = dict(configs) if configs is not None else load()  # a bad config file fails here
        self._http = http
        self._policy = policy or call_policy()
        self._clients: dict[str, ProviderClient] = {}

    def reload(self) -> None:
        """Read the configuration again (SIGHUP). Clients keep their rate-limit history, so a reload never
        lets a burst through; a bad file raises ConfigError and changes nothing."""
        configs = load()
        policy = call_policy()
        self.configs = configs
        self._policy = policy
        for name, client in self._clients.items():
            client.reconfigure(configs[name], policy)

    def get(self, name: str) -> ProviderClient:
        client = self._clients.get(name)
        if client is None:
            config = self.configs.get(name)
            if config is None:
                raise PermanentError(f"no provider {name!r}; known: {', '.join(sorted(self.configs))}")
            client = self._clients[name] = ProviderClient(config, self._http, self._policy)
        return client
