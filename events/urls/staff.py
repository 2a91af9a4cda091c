"""Staff API of the events app, mounted at /api/v1/."""

from rest_framework.routers import SimpleRouter

from events.api.staff import RejectedEventViewSet, SourceViewSet

router = SimpleRouter()
router.register("sources", SourceViewSet, basename="source")
router.register("rejected-events", RejectedEventViewSet, basename="rejected-event")

urlpatterns = router.urls
