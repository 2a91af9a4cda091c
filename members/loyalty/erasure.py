"""Erasure in loyalty: the points ledger and the coupons stay, under the erased member, so the
programme's totals (points issued, spent, owed; coupons issued and redeemed) do not change.

What goes is what staff wrote about the person: a ledger row's reason and a coupon release's
reason lose the person's values in any written form. The ledger is append-only (migration
``0007``); the one change it allows besides a row following its member is this one, to the
reason, in a transaction that says it is an erasure (``SET LOCAL cdp.erasure = 'on'``,
migration ``0021``). The account stops being rechecked (no expiry, no tier review: nothing
about an erased member is recomputed).
"""

from collections.abc import Iterable

from django.db import connection

from cdp.db import rows_delete
from cdp.redaction import Redactor
from members.loyalty.models import Coupon, CouponRedemption, PointsAccount, PointsCheckpoint, PointsEntry

#: The setting that lets an erasure rewrite what staff wrote in ledger rows (migration 0021).
ERASURE_SETTING = "cdp.erasure"


def loyalty_forget(*, member_ids: Iterable[int], redactor: Redactor) -> dict[str, int]:
    """In the erasure's transaction. Returns counts: ledger rows and coupons kept, reasons
    cleaned."""
    ids = sorted(set(member_ids))
    # A replay's state names the person's orders: nothing is recomputed for them any more.
    rows_delete(PointsCheckpoint, column="member", keys=ids)
    PointsAccount.objects.filter(member_id__in=ids).update(
        recheck_at=None, next_expiry_at=None, next_expiry_points=0
    )
    cleaned = 0
    entries = [
        (pk, redactor.text(reason))
        for pk, reason in PointsEntry.objects.filter(member_id__in=ids).values_list("pk", "reason")
        if redactor.mentions(reason)
    ]
    if entries:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, 'on', true)", [ERASURE_SETTING])
            for pk, reason in entries:
                PointsEntry.objects.filter(pk=pk).update(reason=reason[:500])
            cursor.execute("SELECT set_config(%s, 'off', true)", [ERASURE_SETTING])
        cleaned += len(entries)
    for pk, reason in CouponRedemption.objects.filter(member_id__in=ids).values_list("pk", "release_reason"):
        if redactor.mentions(reason):
            CouponRedemption.objects.filter(pk=pk).update(release_reason=redactor.text(reason)[:200])
            cleaned += 1
    return {
        "ledger_rows_kept": PointsEntry.objects.filter(member_id__in=ids).count(),
        "coupons_kept": Coupon.objects.filter(member_id__in=ids).count(),
        "reasons_cleaned": cleaned,
    }
