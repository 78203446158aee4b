"""What `tenantctl status` and `list` report (and the API answers): the registry's view of each
tenant, or of a request that has no tenant yet."""

from typing import Any

from tenant_pipelines.domain.errors import NotFound
from tenant_pipelines.domain.events import Step
from tenant_pipelines.domain.records import RequestRecord, TenantRecord
from tenant_pipelines.domain.states import RequestState
from tenant_pipelines.registry.store import TenantRegistry


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
        "failed_step": Step.VALIDATE.value if request.state == RequestState.REJECTED else None,
        "failure_reason": request.reason,
        "tenant_id": None,
        "request_id": request.request_id,
        "admin_email": request.admin_email,
        "updated_at": request.updated_at.isoformat(),
    }


def tenant_status(registry: TenantRegistry, domain: str, slug: str) -> dict[str, Any]:
    """The newest of the slug's tenant and its latest request; raises NotFound."""
    request = registry.latest_request_for_slug(slug)
    try:
        tenant: TenantRecord | None = registry.get_tenant(slug)
    except NotFound:
        tenant = None
    newer = request is not None and (tenant is None or request.created_at > tenant.created_at)
    if newer and request is not None and request.tenant_id is None:
        return request_json(request, domain)
    if tenant is None:
        raise NotFound(f"no tenant or request with slug {slug!r}")
    return tenant_json(tenant, domain)


def list_statuses(registry: TenantRegistry, domain: str, state: str | None) -> list[dict[str, Any]]:
    return [tenant_json(t, domain) for t in registry.list_tenants(state)]


def format_status(data: dict[str, Any]) -> str:
    line = f"{data['slug']:<20} {data['state']:<16} {data['plan']:<10} {data['url']}"
    if data.get("failed_step"):
        line += f"  failed at {data['failed_step']}: {data.get('failure_reason')}"
    return line
