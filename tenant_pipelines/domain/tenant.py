"""A tenant's identity as every phase and backend sees it, and its key `<slug>-<org>`."""

import re

from pydantic import BaseModel, ConfigDict

# `<slug>-<org>`: a DNS label. Backends name files, schemas, hosts and processes by it, so it is
# checked wherever a key arrives from outside (a file name, a command line, a route).
TENANT_KEY = re.compile(r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$")


def is_tenant_key(value: str) -> bool:
    return bool(TENANT_KEY.fullmatch(value)) and "--" not in value


def check_tenant_key(value: str) -> str:
    """Refuse anything that is not a tenant key before it gets near a path, a query or argv."""
    if not is_tenant_key(value):
        raise ValueError(f"tenant key {value!r} is not a DNS label")
    return value


def tenant_key(slug: str, org: str) -> str:
    """`<slug>-<org>`: one key for many splits (`shop-prod` + `zeta`, `shop` + `prod-zeta`),
    which is why the registry reserves the key itself, not only the slug."""
    return f"{slug}-{org}"


class TenantSpec(BaseModel):
    """What every phase and backend needs to know about one tenant."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    request_id: str
    slug: str
    org: str
    plan: str
    admin_email: str
    # The host its runs and workload live on (`support.hosts`); None: placed before placement
    # existed, acted on wherever its run runs.
    worker_host: str | None = None

    @property
    def key(self) -> str:
        """The tenant's name in every backend: `<slug>-<org>`, a DNS label."""
        return tenant_key(self.slug, self.org)

    def host(self, domain: str) -> str:
        return f"{self.key}.{domain}"

    def url(self, served_at: str) -> str:
        """Its address; `served_at` is the domain with the edge's port unless 443 (`served_at`)."""
        return f"https://{self.key}.{served_at}"


def served_at(domain: str, https_port: int) -> str:
    """What follows `<slug>-<org>.` in a tenant's address: the domain, and the edge's HTTPS port
    unless it is 443 (`localhost:8443`, so `https://acme-widgets.localhost:8443`)."""
    return domain if https_port == 443 else f"{domain}:{https_port}"
