"""Reading a settings class from a given environment rather than the process's own.

The command-line tools and the supervisor resolve settings for an environment they were
handed (the one a child process will inherit, a test's), so pydantic-settings' environment
source is pointed at that mapping; names, prefixes, case and empty values are matched exactly
as they are for ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource

S = TypeVar("S", bound=BaseSettings)


class MappingEnvSource(EnvSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str],
                 env_prefix: str | None = None) -> None:
        self._environ = environ
        super().__init__(settings_cls, env_prefix=env_prefix)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {(name if self.case_sensitive else name.lower()): value
                for name, value in self._environ.items()
                if not (self.env_ignore_empty and value == "")}


def read_settings(cls: type[S], environ: Mapping[str, str] | None = None,
                  env_prefix: str | None = None) -> S:
    """``cls`` read from ``environ`` (the process's environment when None), with
    ``env_prefix`` in place of the class's own when given. A value that does not validate
    raises ``ValueError`` naming its variable."""
    prefix = cls.model_config.get("env_prefix", "") if env_prefix is None else env_prefix
    try:
        if environ is None:
            return cls(_env_prefix=env_prefix) if env_prefix is not None else cls()
        # The mapping is the only source: the process's own environment is left out.
        return cls(_build_sources=((MappingEnvSource(cls, environ, env_prefix),), {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{prefix}{str(error['loc'][0]).upper()}={error.get('input')!r}: {error['msg']}"
            if error["loc"] else error["msg"] for error in exc.errors())
        raise ValueError(problems) from None
