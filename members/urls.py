"""Staff API of the members app, mounted at /api/v1/."""

from rest_framework.routers import SimpleRouter

from members.api import MemberViewSet

router = SimpleRouter()
router.register("members", MemberViewSet, basename="member")

urlpatterns = router.urls
