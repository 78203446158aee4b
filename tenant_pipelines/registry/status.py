"""What `tenantctl status` and `list` report (and the API answers): the registry's view of each
tenant, or of a request that has no tenant yet."""

from tenant_pipelines.domain.errors import NotFound
from tenant_pipelines.domain.events import Step
from tenant_pipelines.domain.records import RequestRecord, TenantRecord
from tenant_pipelines.domain.states import RequestState, StatusState, status_of_request
from tenant_pipelines.domain.status import TenantStatus
from tenant_pipelines.registry.store import TenantRegistry


def of_tenant(tenant: TenantRecord, served_at: str) -> TenantStatus:
    return TenantStatus(
        slug=tenant.slug,
        org=tenant.org,
        plan=tenant.plan,
        state=StatusState(tenant.state),
        url=tenant.spec.url(served_at),
        last_run_id=tenant.last_run_id,
        failed_step=tenant.failed_step,
        failure_reason=tenant.failure_reason,
        tenant_id=tenant.tenant_id,
        request_id=tenant.request_id,
        admin_email=tenant.admin_email,
        created_at=tenant.created_at.isoformat(),
        updated_at=tenant.updated_at.isoformat(),
    )


def of_request(request: RequestRecord, served_at: str) -> TenantStatus:
    """A request that has no tenant yet: its state stands in for the tenant's."""
    return TenantStatus(
        slug=request.slug,
        org=request.org,
        plan=request.plan,
        state=status_of_request(request.state),
        url=f"https://{request.slug}-{request.org}.{served_at}",
        last_run_id=request.run_id,
        failed_step=Step.VALIDATE.value if request.state == RequestState.REJECTED else None,
        failure_reason=request.reason,
        tenant_id=None,
        request_id=request.request_id,
        admin_email=request.admin_email,
        created_at=request.created_at.isoformat(),
        updated_at=request.updated_at.isoformat(),
    )


def tenant_status(registry: TenantRegistry, served_at: str, slug: str) -> TenantStatus:
    """The newest of the slug's tenant and its latest request; raises NotFound."""
    request = registry.requests.latest_for_slug(slug)
    try:
        tenant: TenantRecord | None = registry.tenants.get(slug)
    except NotFound:
        tenant = None
    newer = request is not None and (tenant is None or request.created_at > tenant.created_at)
    if newer and request is not None and request.tenant_id is None:
        return of_request(request, served_at)
    if tenant is None:
        raise NotFound(f"no tenant or request with slug {slug!r}")
    return of_tenant(tenant, served_at)


def waiting_request(registry: TenantRegistry, slug: str) -> RequestRecord | None:
    """The slug's newest request if it is launched but has no tenant (its run has not got past
    Validate, or failed there for a reason that is not a refusal), and is newer than any tenant
    of the slug: what `status` shows, and what retry and discard act on."""
    request = registry.requests.latest_for_slug(slug)
    if request is None or request.tenant_id is not None:
        return None
    if request.state != RequestState.LAUNCHED:
        return None
    try:
        tenant = registry.tenants.get(slug)
    except NotFound:
        return request
    return request if request.created_at > tenant.created_at else None


def list_statuses(
    registry: TenantRegistry, served_at: str, state: str | None
) -> list[TenantStatus]:
    return [of_tenant(t, served_at) for t in registry.tenants.all(state)]
