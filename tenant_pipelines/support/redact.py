"""What a log line may say of a request: its path, never its query string, and nothing shaped
like one of the platform's secrets.

A token sent as `?token=...` or pasted into a path must not outlive the request in a log file
that more people (and backups) can read than the registry. The edge, the API server and the
tenant workloads log through these two functions. Only `re`: workloads import this module.
"""

import re

MASK = "***"
# An API token is `tp_<token id>_<secret>` (domain.tokens; support may not import the domain):
# the id names the token in `tenantctl token list` and stays, the secret goes. Only where a token
# can begin: a random key may hold `tp_<letters>_` inside it, and must then be masked whole.
_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])(tp_[0-9A-Za-z]+_)[A-Za-z0-9_-]+")
# The platform's other secrets (operator and session keys, invitation codes, CSRF tokens) are
# `secrets.token_urlsafe` strings of 32 bytes or more: long runs of the url-safe alphabet that mix
# upper and lower case, as no slug, org, tenant key, uuid, hex digest or run id does.
_RANDOM_RUN = re.compile(r"[A-Za-z0-9_-]{20,}")
_UPPER = re.compile(r"[A-Z]")
_LOWER = re.compile(r"[a-z]")


def _mask_random(match: re.Match[str]) -> str:
    run = match.group(0)
    return MASK if _UPPER.search(run) and _LOWER.search(run) else run


def mask_secrets(text: str) -> str:
    """`text` with every token's secret part and every random-looking key replaced by `***`."""
    return _RANDOM_RUN.sub(_mask_random, _TOKEN.sub(rf"\g<1>{MASK}", text))


def loggable_target(target: str) -> str:
    """A request target as a log line may carry it: the path alone (no query string, no
    fragment), with secrets masked."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    return mask_secrets(path)
