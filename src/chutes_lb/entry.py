"""What every service entry point does first: settings read once, logging configured once."""
from __future__ import annotations

import sys

from chutes_lb.logs import setup_logging
from chutes_lb.settings import Settings, SettingsError, load_settings


def check_requested(argv: list[str] | None) -> bool:
    """``--check``: validate the settings and the config like a start would, start nothing."""
    args = sys.argv[1:] if argv is None else argv
    unknown = [a for a in args if a != "--check"]
    if unknown:
        print(f"usage: python -m <service> [--check]  (unknown argument {unknown[0]!r})", file=sys.stderr)
        raise SystemExit(2)
    return "--check" in args


def config_error(prog: str, message: object) -> int:
    """One line on stderr (the scripts show it on the terminal) and in the log; exit status 2."""
    print(f"{prog}: configuration error: {message}", file=sys.stderr, flush=True)
    return 2


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
