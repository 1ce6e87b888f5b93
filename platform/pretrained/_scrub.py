"""Moved to :mod:`platform.secrets` (the scrubber now covers every part of the platform)."""

from platform.secrets import REDACTED, install_log_scrubber, register_env_secrets, register_secrets, scrub, scrub_url

__all__ = ["REDACTED", "install_log_scrubber", "register_env_secrets", "register_secrets", "scrub", "scrub_url"]
