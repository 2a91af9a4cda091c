"""Staff API of the events app, mounted at /api/v1/."""

from rest_framework.routers import SimpleRouter

from events.api.parking import ParkedEventViewSet
from events.api.staff import RejectedEventViewSet, SourceViewSet

router = SimpleRouter()
router.register("sources", SourceViewSet, basename="source")
router.register("rejected-events", RejectedEventViewSet, basename="rejected-event")
router.register("parked-events", ParkedEventViewSet, basename="parked-event")

urlpatterns = router.urls
