"""Staff API of the privacy app, mounted at /api/v1/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from members.privacy.api import MemberEraseView, MemberExportView, PrivacyRequestViewSet

router = SimpleRouter()
router.register("privacy/requests", PrivacyRequestViewSet, basename="privacy-request")

urlpatterns = [
    *router.urls,
    path("members/<int:member_id>/erase/", MemberEraseView.as_view(), name="member-erase"),
    path("members/<int:member_id>/export/", MemberExportView.as_view(), name="member-export"),
]
