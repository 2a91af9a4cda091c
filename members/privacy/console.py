"""The console's access export: the member page's download button gives everything held about
the person as a JSON file (the same export as the API, recorded and audited the same way)."""

from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from rest_framework.utils.encoders import JSONEncoder

from cdp.db import MAX_BIGINT
from cdp.scopes import request_scope
from members.privacy.services import access_request

EXPORT = "privacy.export_member"


@login_required
@permission_required(EXPORT, raise_exception=True)
def member_export(request: HttpRequest, member_id: int) -> HttpResponse:
    if not request_scope(request).unrestricted:  # everything held, from every store
        raise PermissionDenied("Open to unscoped accounts only.")
    if member_id > MAX_BIGINT:
        raise Http404(f"No member {member_id}.")
    export = access_request(member_id=member_id, user=request.user, channel="console")
    if export is None:
        raise Http404(f"No member {member_id}.")
    body = JSONEncoder(ensure_ascii=False, indent=2).encode(export)
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    name = f"member-{export['member_id']}-{timezone.now():%Y%m%dT%H%M%SZ}.json"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
