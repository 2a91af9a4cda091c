"""Staff API for sources (create, disable, rotate keys) and rejected events. Admins only."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from cdp.permissions import permissions_required
from cdp.privacy import Masking
from events.models import Channel, ErasureRule, RejectedEvent, Source
from events.services import (
    source_create,
    source_rotate_key,
    source_set_default_currency,
    source_set_enabled,
    source_set_erasure,
)


class SourceOutput(serializers.ModelSerializer):
    class Meta:
        model = Source
        fields: tuple[str, ...] = (
            "id", "name", "kind", "store_code", "default_currency", "erasure", "write_key_prefix", "enabled",
            "created_at",
        )  # fmt: skip


class SourceWithKeyOutput(SourceOutput):
    write_key = serializers.CharField(help_text="Shown once; only its hash is kept.")

    class Meta(SourceOutput.Meta):
        fields = (*SourceOutput.Meta.fields, "write_key")


class SourceCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=Channel.choices)
    store_code = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
    default_currency = serializers.RegexField(
        r"^[A-Z]{3}$",
        required=False,
        help_text="For orders that name no currency; the platform's (CDP_CURRENCY) if not given.",
        error_messages={"invalid": "A three-letter ISO 4217 code in capitals, e.g. CNY."},
    )

    def validate(self, attrs: dict) -> dict:
        if attrs["kind"] == Channel.POS and not attrs["store_code"]:
            raise serializers.ValidationError({"store_code": "A POS source needs a store code."})
        if attrs["kind"] != Channel.POS and attrs["store_code"]:
            raise serializers.ValidationError({"store_code": "Only POS sources have a store code."})
        return attrs


class SourceUpdateInput(serializers.Serializer):
    default_currency = serializers.RegexField(
        r"^[A-Z]{3}$",
        required=False,
        help_text="For orders that name no currency, from now on.",
        error_messages={"invalid": "A three-letter ISO 4217 code in capitals, e.g. CNY."},
    )
    erasure = serializers.ChoiceField(
        choices=ErasureRule.choices,
        required=False,
        help_text="What erasing a person does to this source's events: strip their personal data, or delete them.",
    )

    def validate(self, attrs: dict) -> dict:
        if not attrs:
            raise serializers.ValidationError({"default_currency": "give default_currency or erasure"})
        return attrs


def _with_key(source: Source, write_key: str) -> dict:
    return {**SourceOutput(source).data, "write_key": write_key}


@extend_schema(tags=["sources"])
class SourceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    permission_classes = (
        permissions_required("events.view_source", "events.add_source", "events.change_source"),
    )
    serializer_class = SourceOutput
    queryset = Source.objects.all()
    lookup_value_regex = "[0-9]{1,19}"  # anything else is no route: a JSON 404 (cdp.errors.not_found)

    @extend_schema(request=SourceCreateInput, responses={201: SourceWithKeyOutput})
    def create(self, request: Request) -> Response:
        data = SourceCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            created = source_create(**data.validated_data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        return Response(_with_key(created.source, created.write_key), status=status.HTTP_201_CREATED)

    @extend_schema(request=SourceUpdateInput, responses={200: SourceOutput})
    def partial_update(self, request: Request, pk: str) -> Response:
        """Change a source's settings (its default currency, what an erasure does to its events)."""
        source = get_object_or_404(Source, pk=pk)  # no such source is a 404 whatever the body
        data = SourceUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            if "default_currency" in data.validated_data:
                source = source_set_default_currency(
                    source=source, currency=data.validated_data["default_currency"]
                )
            if "erasure" in data.validated_data:
                source = source_set_erasure(source=source, rule=data.validated_data["erasure"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        return Response(SourceOutput(source).data)

    @extend_schema(request=None, responses={200: SourceOutput})
    @action(detail=True, methods=["post"])
    def disable(self, request: Request, pk: str) -> Response:
        source = source_set_enabled(source=get_object_or_404(Source, pk=pk), enabled=False)
        return Response(SourceOutput(source).data)

    @extend_schema(request=None, responses={200: SourceOutput})
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, pk: str) -> Response:
        source = source_set_enabled(source=get_object_or_404(Source, pk=pk), enabled=True)
        return Response(SourceOutput(source).data)

    @extend_schema(request=None, responses={200: SourceWithKeyOutput})
    @action(detail=True, methods=["post"], url_path="rotate-key")
    def rotate_key(self, request: Request, pk: str) -> Response:
        rotated = source_rotate_key(source=get_object_or_404(Source, pk=pk))
        return Response(_with_key(rotated.source, rotated.write_key))


class RejectedEventOutput(serializers.ModelSerializer):
    source = serializers.CharField(source="source.name")  # type: ignore[assignment]  # a field named "source" shadows the stubs' Field.source

    class Meta:
        model = RejectedEvent
        fields = (
            "id", "source", "received_at", "endpoint", "batch_index", "message_id",
            "code", "reason", "errors", "payload", "raw_excerpt",
        )  # fmt: skip


@extend_schema(tags=["sources"])
class RejectedEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Events refused at ingestion, newest first; filter with ``?source=<id>``, ``?code=``."""

    permission_classes = (permissions_required("events.view_rejectedevent"),)
    serializer_class = RejectedEventOutput
    lookup_value_regex = "[0-9]{1,19}"

    def list(self, request: Request, *args: object, **kwargs: object) -> Response:
        response = super().list(request, *args, **kwargs)
        _personal_data_shown(request, response.data["results"])
        return response

    def retrieve(self, request: Request, *args: object, **kwargs: object) -> Response:
        response = super().retrieve(request, *args, **kwargs)
        _personal_data_shown(request, [response.data])
        return response

    def get_queryset(self):  # noqa: ANN201 - DRF hook
        queryset = RejectedEvent.objects.select_related("source")
        if source := self.request.query_params.get("source"):
            # ASCII digits only: "²".isdigit() is true, yet no number (and no source).
            queryset = (
                queryset.filter(source_id=source)
                if source.isascii() and source.isdigit()
                else queryset.none()
            )
        if code := self.request.query_params.get("code"):
            queryset = queryset.filter(code=code)
        return queryset


def _personal_data_shown(request: Request, rejected: list) -> None:
    """A refused event's payload holds whatever the sender put in it: its personal values are
    masked for a role that may not see them, and a view of them in full is audited (no member:
    a refused event was never resolved to one)."""
    masking = Masking(request.user, channel="api", detail=request.get_full_path())
    for row in rejected:
        row["payload"] = masking.document(row["payload"], at=("payload",))
        row["raw_excerpt"] = masking.document(row["raw_excerpt"], at=("raw_excerpt",))
    masking.audit(())
