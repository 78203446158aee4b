"""The API server's log: uvicorn's own lines, with each request's target cut to its path and
every secret-shaped string masked (`support.redact`). Headers and bodies are never logged, so
a bearer token, a cookie, the operator key or a login form's token cannot reach the file
`tenantctl up` writes (`<data dir>/logs/api.log`)."""

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG

from tenant_pipelines.support.redact import loggable_target, mask_secrets

# uvicorn's access records: (client address, method, target, HTTP version, status).
ACCESS_ARGS = 5
TARGET_ARG = 2


class SecretMaskingFilter(logging.Filter):
    """Formats the record's message (and traceback) now, masked, for every handler after it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_secrets(record.getMessage())
        record.args = None
        record.__dict__.pop("color_message", None)  # uvicorn's unmasked coloured copy
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


class AccessLineFilter(SecretMaskingFilter):
    """Keeps uvicorn's access line as it is, but with the target's path only, masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == ACCESS_ARGS:
            # uvicorn's AccessFormatter unpacks these arguments: keep their shape.
            target = loggable_target(str(args[TARGET_ARG]))
            record.args = (*args[:TARGET_ARG], target, *args[TARGET_ARG + 1 :])
            return True
        return super().filter(record)


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, every handler behind the masking filters; the
    platform's own loggers write through the same handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {
        "access": {"()": AccessLineFilter},
        "secrets": {"()": SecretMaskingFilter},
    }
    config["handlers"]["access"]["filters"] = ["access"]
    config["handlers"]["default"]["filters"] = ["secrets"]
    config["loggers"]["tenant_pipelines"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    return config
