"""The paid APIs the handlers call, behind one object per daemon.

``Providers`` holds one ``ProviderClient`` per provider, each with its own connection pool, rate limit
and concurrency cap, shared by every job of the daemon: every job calling a provider shares its budget
and its connections. Configuration: ``jobrunner.providers.config``. Retries: ``.client``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import PermanentError
from .client import CallPolicy, CallStats, ProviderClient
from .config import ProviderConfig, call_policy, load

__all__ = ["CallPolicy", "CallStats", "ProviderClient", "Providers"]


class Providers:
    def __init__(self, configs: Mapping[str, ProviderConfig] | None = None, policy: CallPolicy | None = None) -> None:
        self.configs = dict(configs) if configs is not None else load()  # a bad config file fails here
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
            client = self._clients[name] = ProviderClient(config, self._policy)
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
