"""Output serializers built once per process, for the staff API's hottest answers.

DRF makes a serializer's fields afresh for every instance, deep-copying each declared field and
each nested serializer: for the 360 view's ``ProfileOutput`` (identifiers, traits, orders,
history, tags, segments, groups nested in it) about 2 ms of CPU a request, a third of the view
(``bench/profile_member.py``). An output serializer only reads its instance, so one per class,
its fields bound once, renders every request: ``to_representation`` keeps no state between
calls, so the threads of a worker may share it. The answer is the same as ``.data``'s.
"""

from collections.abc import Iterable
from functools import cache
from typing import Any

from rest_framework import serializers


@cache
def _shared(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    serializer = serializer_class()
    serializer.fields  # noqa: B018 - bound now, once
    return serializer


def rendered(serializer_class: type[serializers.Serializer], instance: Any) -> dict[str, Any]:
    """``serializer_class(instance).data``, by this process's one instance of it."""
    return _shared(serializer_class).to_representation(instance)


def rendered_each(
    serializer_class: type[serializers.Serializer], instances: Iterable[Any]
) -> list[dict[str, Any]]:
    """``serializer_class(instances, many=True).data``, by this process's one instance of it."""
    shared = _shared(serializer_class)
    return [shared.to_representation(instance) for instance in instances]
