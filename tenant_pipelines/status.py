"""What `tenantctl status` and `list` report: the registry's view of each tenant."""

from typing import TYPE_CHECKING, Any

from tenant_pipelines.errors import NotFound
from tenant_pipelines.registry import RequestRecord, TenantRecord, TenantRegistry
from tenant_pipelines.settings import Settings

if TYPE_CHECKING:
    from dagster import DagsterInstance


def registry(settings: Settings) -> TenantRegistry:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return TenantRegistry.shared(settings.db_url)


def instance(settings: Settings) -> "DagsterInstance":
    from tenant_pipelines.instance import open_instance  # Dagster is slow to import

    return open_instance(settings.dagster_home, settings)


def tenant_json(tenant: TenantRecord, domain: str) -> dict[str, Any]:
    return {
        "slug": tenant.slug,
        "org": tenant.org,
        "plan": tenant.plan,
        "state": tenant.state,
        "url": tenant.spec.url(domain),
        "last_run_id": tenant.last_run_id,
        "failed_step": tenant.failed_step,
        "failure_reason": tenant.failure_reason,
        "tenant_id": tenant.tenant_id,
        "request_id": tenant.request_id,
        "admin_email": tenant.admin_email,
        "updated_at": tenant.updated_at.isoformat(),
    }


def request_json(request: RequestRecord, domain: str) -> dict[str, Any]:
    """A request that has no tenant yet: its state stands in for the tenant's."""
    return {
        "slug": request.slug,
        "org": request.org,
        "plan": request.plan,
        "state": f"request-{request.state}",
        "url": f"https://{request.slug}-{request.org}.{domain}",
        "last_run_id": request.run_id,
        "failed_step": "validate" if request.state == "rejected" else None,
        "failure_reason": request.reason,
        "tenant_id": None,
        "request_id": request.request_id,
        "admin_email": request.admin_email,
        "updated_at": request.updated_at.isoformat(),
    }


def tenant_status(settings: Settings, slug: str) -> dict[str, Any]:
    reg = registry(settings)
    request = reg.latest_request_for_slug(slug)
    try:
        tenant = reg.get_tenant(slug)
    except NotFound:
        tenant = None
    newer = request is not None and (tenant is None or request.created_at > tenant.created_at)
    if newer and request is not None and request.tenant_id is None:
        return request_json(request, settings.domain)
    if tenant is None:
        raise NotFound(f"no tenant or request with slug {slug!r}")
    return tenant_json(tenant, settings.domain)


def list_statuses(settings: Settings, state: str | None) -> list[dict[str, Any]]:
    return [tenant_json(t, settings.domain) for t in registry(settings).list_tenants(state)]


def format_status(data: dict[str, Any]) -> str:
    line = f"{data['slug']:<20} {data['state']:<16} {data['plan']:<10} {data['url']}"
    if data.get("failed_step"):
        line += f"  failed at {data['failed_step']}: {data.get('failure_reason')}"
    return line
