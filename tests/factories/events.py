import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from cdp.credentials import credential_hash, credential_new, credential_prefix
from events.models import Channel, Event, EventType, Source


class SourceFactory(DjangoModelFactory[Source]):
    """A source; the clear write key is on ``source.write_key`` (only its hash is stored)."""

    class Meta:
        model = Source

    class Params:
        pos = factory.Trait(kind=Channel.POS, store_code=factory.Sequence(lambda n: f"S{n:03d}"))

    name = factory.Sequence(lambda n: f"Source {n}")
    kind = Channel.WEB
    store_code = ""
    write_key = factory.LazyFunction(lambda: credential_new(kind="wk"))

    @classmethod
    def _create(cls, model_class: type[Source], *args: object, write_key: str, **kwargs: object) -> Source:
        source = super()._create(
            model_class,
            *args,
            write_key_hash=credential_hash(write_key),
            write_key_prefix=credential_prefix(write_key),
            **kwargs,
        )
        source.write_key = write_key
        return source


class EventFactory(DjangoModelFactory[Event]):
    class Meta:
        model = Event

    source = factory.SubFactory(SourceFactory)
    message_id = factory.Sequence(lambda n: f"msg-{n}")
    type = EventType.TRACK
    event = "Product Viewed"
    user_id = factory.Sequence(lambda n: f"user-{n}")
    channel = factory.SelfAttribute("source.kind")
    store_code = factory.SelfAttribute("source.store_code")
    timestamp = factory.LazyFunction(timezone.now)
    received_at = factory.LazyFunction(timezone.now)


class TrackMessageFactory(factory.DictFactory):
    """A Segment ``track`` message as a client sends it."""

    type = "track"
    messageId = factory.Sequence(lambda n: f"m-{n:06d}")
    userId = factory.Sequence(lambda n: f"u-{n}")
    event = "Product Viewed"
    properties = factory.Dict({"product_id": "sku-1", "price": 19.9})
    timestamp = "2026-11-01T10:00:00Z"
