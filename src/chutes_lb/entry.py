"""What every service entry point does first: settings read once, logging configured once."""
from __future__ import annotations

import sys

from chutes_lb.logs import setup_logging
from chutes_lb.settings import Settings, SettingsError, load_settings


def start_service(prog: str) -> Settings:
    """Settings (environment, then .env, then defaults) with logging set up and secrets redacted;
    a malformed value exits with status 2 and a message naming the variable."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(settings.log_level, settings.secrets())
    return settings
