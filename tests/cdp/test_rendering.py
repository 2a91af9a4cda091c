"""Output serializers built once per process (``cdp.rendering``) answer as ``.data`` does."""

from datetime import UTC, datetime
from decimal import Decimal

from rest_framework import serializers

from cdp.rendering import rendered, rendered_each


class LineOutput(serializers.Serializer):
    sku = serializers.CharField()
    total = serializers.DecimalField(max_digits=10, decimal_places=2)


class OrderOutput(serializers.Serializer):
    id = serializers.IntegerField()
    placed_at = serializers.DateTimeField(allow_null=True)
    lines = LineOutput(many=True)
    by_channel = serializers.DictField(child=LineOutput(many=True))


def order(n: int) -> dict:
    line = {"sku": f"S{n}", "total": Decimal(n) / 4}
    return {
        "id": n,
        "placed_at": datetime(2026, 12, n, 10, tzinfo=UTC) if n % 2 else None,
        "lines": [line] * n,
        "by_channel": {"pos": [line], "app": []},
    }


def test_one_shared_serializer_renders_as_a_new_one_each_time():
    orders = [order(n) for n in range(1, 5)]

    assert [rendered(OrderOutput, o) for o in orders] == [OrderOutput(o).data for o in orders]
    assert rendered_each(OrderOutput, orders) == OrderOutput(orders, many=True).data
    assert rendered(OrderOutput, orders[0]) == OrderOutput(orders[0]).data  # nothing kept from the last
