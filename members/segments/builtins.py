"""What the platform ships and computes itself: the computed tags (RFM group, lifecycle stage,
channel preference; decided by ``members.segments.computed``), one built-in segment per RFM
group and per lifecycle stage, and the full compute of the computed tags.

``builtins_install`` (after every ``migrate``) creates the computed tags and the built-in
segments and keeps their names, descriptions and rules current; it never touches a tag or a
segment staff made, even one with the same key. Built-in segments are dynamic segments whose
rule is their tag (``{"tag": "rfm-champions"}``): staff copy them to change them.

The nightly recompute calls ``rfm_cutoffs_compute`` (the quintile edges of all buyers) and then
``computed_tags_compute_all`` (every member's computed tags against those edges, set-based);
between two nights the member refresh keeps each refreshed member's computed tags current
with ``computed.computed_tags_of`` against the same stored edges.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django.apps import apps as global_apps
from django.apps.registry import Apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, transaction
from django.utils import timezone

from members.locks import full_compute_memory, memberships_lock
from members.segments.computed import (
    CHANNEL_OMNICHANNEL,
    CHANNEL_ONLINE_ONLY,
    CHANNEL_STORE_ONLY,
    COMPUTED_TAGS,
    LIFECYCLE_ACTIVE,
    LIFECYCLE_AT_RISK,
    LIFECYCLE_CHURNED,
    LIFECYCLE_NEW,
    LIFECYCLE_STAGES,
    RFM_GROUPS,
    LifecycleWindows,
    RfmEdges,
    channel_tag_key,
    lifecycle_tag_key,
    rfm_group,
    rfm_tag_key,
)
from members.segments.models import RfmCutoffs, Segment, Tag

logger = logging.getLogger(__name__)


def lifecycle_windows() -> LifecycleWindows:
    """The lifecycle windows of the settings (``LIFECYCLE_NEW_DAYS``, ``LIFECYCLE_ACTIVE_DAYS``,
    ``LIFECYCLE_CHURN_DAYS``); ValueError if they make no sense."""
    return LifecycleWindows(
        new_days=settings.LIFECYCLE_NEW_DAYS,
        active_days=settings.LIFECYCLE_ACTIVE_DAYS,
        churn_days=settings.LIFECYCLE_CHURN_DAYS,
    )


def rfm_edges_load() -> RfmEdges | None:
    """The RFM edges of the last ``rfm_cutoffs_compute``, or None if it never found buyers."""
    row = RfmCutoffs.objects.order_by("-computed_at", "-id").first()
    if row is None:
        return None
    return RfmEdges(recency=_four(row.recency), frequency=_four(row.frequency), monetary=_four(row.monetary))


_Edge = TypeVar("_Edge", datetime, int, Decimal)


def _four(edges: Sequence[_Edge]) -> tuple[_Edge, _Edge, _Edge, _Edge]:
    first, second, third, fourth = edges  # written by rfm_cutoffs_compute from an RfmEdges: four
    return first, second, third, fourth


# --- built in: the computed tags and their segments ---------------------------------------------


@dataclass(frozen=True, slots=True)
class BuiltInSegment:
    """A segment shipped with the platform: the members carrying one computed tag."""

    key: str
    name: str
    description: str
    tag: str

    @property
    def rule(self) -> dict:
        return {"tag": self.tag}


def built_in_segments(windows: LifecycleWindows) -> tuple[BuiltInSegment, ...]:
    """One segment per RFM group and per lifecycle stage, keyed like their tag."""
    tags = {tag.key: tag for tag in COMPUTED_TAGS}
    segments = []
    for group in RFM_GROUPS:
        tag = tags[rfm_tag_key(group)]
        segments.append(
            BuiltInSegment(
                key=tag.key,
                name=f"RFM: {tag.name}",
                description=f"RFM group {tag.name}: {tag.description[0].lower()}{tag.description[1:]}",
                tag=tag.key,
            )
        )
    for stage in LIFECYCLE_STAGES:
        tag = tags[lifecycle_tag_key(stage)]
        segments.append(
            BuiltInSegment(
                key=tag.key,
                name=f"Lifecycle: {tag.name}s",
                description=tag.description_for(windows),
                tag=tag.key,
            )
        )
    return tuple(segments)


def builtins_install(*, using: str = DEFAULT_DB_ALIAS, apps: Apps = global_apps, **kwargs: object) -> None:
    """Create the computed tags and the built-in segments, or bring their names, descriptions
    and rules up to date (a ``post_migrate`` receiver of the segments app; idempotent). A tag
    or segment of the same key that is not the platform's (not computed, not built in) is
    left alone and logged."""
    try:
        tag_model = apps.get_model("segments", "Tag")
        segment_model = apps.get_model("segments", "Segment")
    except LookupError:  # the segments app migrated to zero
        return
    if "built_in" not in {field.name for field in segment_model._meta.get_fields()}:
        return  # migrated to before built-in segments existed
    windows = lifecycle_windows()
    with transaction.atomic(using=using):
        _tags_install(tag_model, using, windows)
        _segments_install(segment_model, using, windows)


def _tags_install(tag_model: type[Tag], using: str, windows: LifecycleWindows) -> None:
    existing = {
        tag.key: tag for tag in tag_model.objects.using(using).filter(key__in=[t.key for t in COMPUTED_TAGS])
    }
    missing = []
    for definition in COMPUTED_TAGS:
        wanted = {"name": definition.name, "description": definition.description_for(windows)}
        tag = existing.get(definition.key)
        if tag is None:
            missing.append(tag_model(key=definition.key, kind=Tag.Kind.COMPUTED, **wanted))
        elif tag.kind != Tag.Kind.COMPUTED:
            logger.warning(
                "tag %r is a %s tag: the computed tag of that key is not installed", tag.key, tag.kind
            )
        elif {"name": tag.name, "description": tag.description} != wanted:
            tag_model.objects.using(using).filter(pk=tag.pk).update(**wanted, updated_at=timezone.now())
    # A concurrent install may have made some: theirs stand.
    tag_model.objects.using(using).bulk_create(missing, ignore_conflicts=True)


def _segments_install(segment_model: type[Segment], using: str, windows: LifecycleWindows) -> None:
    definitions = built_in_segments(windows)
    existing = {
        s.key: s for s in segment_model.objects.using(using).filter(key__in=[d.key for d in definitions])
    }
    missing = []
    for definition in definitions:
        wanted = {
            "name": definition.name,
            "description": definition.description,
            "kind": "dynamic",
            "rule": definition.rule,
        }
        segment = existing.get(definition.key)
        if segment is None:
            missing.append(segment_model(key=definition.key, built_in=True, **wanted))
        elif not segment.built_in:
            logger.warning("segment %r was made by staff: the built-in segment of that key is not installed",
                           segment.key)  # fmt: skip
        elif {name: getattr(segment, name) for name in wanted} != wanted:
            segment_model.objects.using(using).filter(pk=segment.pk).update(
                **wanted, updated_at=timezone.now()
            )
    segment_model.objects.using(using).bulk_create(missing, ignore_conflicts=True)


def computed_tag_ids() -> dict[str, int]:
    """The computed tags' ids by key, installing any that are missing (a database made without
    ``migrate``'s signal). A key taken by a staff tag has no id here."""
    ids = dict(Tag.objects.filter(kind=Tag.Kind.COMPUTED).values_list("key", "id"))
    if any(tag.key not in ids for tag in COMPUTED_TAGS):
        _tags_install(Tag, DEFAULT_DB_ALIAS, lifecycle_windows())
        ids = dict(Tag.objects.filter(kind=Tag.Kind.COMPUTED).values_list("key", "id"))
    return {tag.key: ids[tag.key] for tag in COMPUTED_TAGS if tag.key in ids}


# --- the full compute ---------------------------------------------------------------------------

#: The buyers whose figures RFM ranks: active members with orders (which have purchase times).
_FIGURES = "FROM members_memberaggregate AS a JOIN members_member AS m ON m.id = a.member_id"
_BUYER = "m.status = 'active' AND a.orders > 0 AND a.first_purchase_at IS NOT NULL AND a.last_purchase_at IS NOT NULL"

# One statement: the quintile edges over all buyers written as the one row (id 1), replacing
# any other; nothing written when there are no buyers (the last edges stay).
_RFM_CUTOFFS = f"""
WITH edges AS (
    SELECT percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY a.last_purchase_at) AS recency,
           percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY a.orders) AS frequency,
           percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY a.spend) AS monetary,
           count(*) AS members
    {_FIGURES}
    WHERE {_BUYER}
    HAVING count(*) > 0
),
others AS (
    DELETE FROM members_rfmcutoffs WHERE id <> 1 AND EXISTS (SELECT 1 FROM edges)
)
INSERT INTO members_rfmcutoffs (id, recency, frequency, monetary, members, computed_at)
SELECT 1, recency, frequency, monetary, members, %s FROM edges
ON CONFLICT (id) DO UPDATE SET recency = EXCLUDED.recency, frequency = EXCLUDED.frequency,
    monetary = EXCLUDED.monetary, members = EXCLUDED.members, computed_at = EXCLUDED.computed_at
RETURNING id, recency, frequency, monetary, members, computed_at
"""  # noqa: S608 (constant text: no input reaches it)


def rfm_cutoffs_compute(*, now: datetime) -> RfmCutoffs | None:
    """Compute and store the RFM edges: the 20th, 40th, 60th and 80th percentiles
    (``percentile_disc``: values that occur) of last purchase, orders and spend over the
    active members with orders, in one statement. Returns the stored row, or None (nothing
    written) when no member has orders."""
    with connection.cursor() as cursor:
        cursor.execute(_RFM_CUTOFFS, [now])
        row = cursor.fetchone()
    if row is None:
        return None
    pk, recency, frequency, monetary, members, computed_at = row
    return RfmCutoffs(
        pk=pk,
        recency=recency,
        frequency=frequency,
        monetary=monetary,
        members=members,
        computed_at=computed_at,
    )


# Every buyer's computed tags (``wanted``: one row per member and tag) against the ones they
# carry (``carried``); the rows that differ are deleted (by row address) or inserted, and
# both appended to the tag history. The CASEs mirror ``computed.lifecycle_stage`` and
# ``computed.channel_preference``; RFM looks its group up in the grid of tag ids by
# (r - 1) * 5 + FM, the grid built from ``computed.rfm_group`` itself.
_COMPUTED_TAGS_DIFF = f"""
WITH wanted AS (
    SELECT a.member_id, k.tag_id
    {_FIGURES}
    CROSS JOIN LATERAL (VALUES
        (CASE WHEN a.first_purchase_at >= %(new_since)s THEN %(new)s
              WHEN a.last_purchase_at >= %(active_since)s THEN %(active)s
              WHEN a.last_purchase_at >= %(churn_since)s THEN %(at_risk)s
              ELSE %(churned)s END),
        (CASE WHEN a.orders_pos > 0 AND (a.orders_app > 0 OR a.orders_mini_program > 0 OR a.orders_web > 0)
                   THEN %(omnichannel)s
              WHEN a.orders_pos > 0 THEN %(store_only)s
              WHEN a.orders_app > 0 OR a.orders_mini_program > 0 OR a.orders_web > 0 THEN %(online_only)s
         END),
        ({{rfm}})
    ) AS k(tag_id)
    WHERE {_BUYER} AND k.tag_id IS NOT NULL
),
carried AS (
    SELECT t.ctid AS address, t.member_id, t.tag_id FROM members_membertag AS t
    WHERE t.tag_id = ANY(%(tags)s::bigint[])
),
diff AS (
    SELECT c.address, coalesce(w.member_id, c.member_id) AS member_id, coalesce(w.tag_id, c.tag_id) AS tag_id
    FROM wanted AS w FULL JOIN carried AS c ON c.member_id = w.member_id AND c.tag_id = w.tag_id
    WHERE w.member_id IS NULL OR c.member_id IS NULL
),
gone AS (
    DELETE FROM members_membertag
    WHERE ctid = ANY(ARRAY(SELECT d.address FROM diff AS d WHERE d.address IS NOT NULL))
    RETURNING member_id, tag_id
),
came AS (
    INSERT INTO members_membertag (member_id, tag_id, added_at)
    SELECT d.member_id, d.tag_id, %(now)s FROM diff AS d WHERE d.address IS NULL
    ON CONFLICT (member_id, tag_id) DO NOTHING
    RETURNING member_id, tag_id
)
INSERT INTO members_tagchange (member_id, tag_id, action, at)
SELECT member_id, tag_id, 'removed', %(now)s FROM gone
UNION ALL
SELECT member_id, tag_id, 'added', %(now)s FROM came
"""  # noqa: S608 (constant text: no input reaches it)


def _score_sql(column: str, letter: str) -> str:
    """SQL of ``computed.rfm_scores``' score of ``column`` against the edges ``<letter>1..4``."""
    return "(1 + " + " + ".join(f"({column} > %({letter}{n})s)::int" for n in range(1, 5)) + ")"


_RFM_GROUP = (
    f"(%(rfm_grid)s::bigint[])[({_score_sql('a.last_purchase_at', 'r')} - 1) * 5"
    f" + ({_score_sql('a.orders', 'f')} + {_score_sql('a.spend', 'm')} + 1) / 2]"
)


def computed_tags_compute_all(*, now: datetime) -> int:
    """Recompute every member's computed tags at ``now`` from their figures and the stored RFM
    edges (``rfm_cutoffs_compute`` first), in one statement over all members: tags no longer
    due are removed, new ones added, each recorded in the tag history (by nobody). Members
    without orders and members absorbed by merges end with none. Returns how many tags were
    added or removed.

    Holds the computed tags exclusively against the incremental path (which holds them
    shared), so the statement sees every refresh that wrote them committed and no refresh
    writes them until it commits."""
    windows = lifecycle_windows()
    with transaction.atomic():
        ids = computed_tag_ids()
        memberships_lock(tag_ids=list(ids.values()), segment_ids=[], exclusive=True)
        full_compute_memory()
        edges = rfm_edges_load()
        params: dict[str, Any] = {
            "now": now,
            "tags": sorted(ids.values()),
            "new_since": now - timedelta(days=windows.new_days),
            "active_since": now - timedelta(days=windows.active_days),
            "churn_since": now - timedelta(days=windows.churn_days),
            **{
                name: ids.get(lifecycle_tag_key(stage))
                for name, stage in (
                    ("new", LIFECYCLE_NEW),
                    ("active", LIFECYCLE_ACTIVE),
                    ("at_risk", LIFECYCLE_AT_RISK),
                    ("churned", LIFECYCLE_CHURNED),
                )
            },
            **{
                name: ids.get(channel_tag_key(preference))
                for name, preference in (
                    ("omnichannel", CHANNEL_OMNICHANNEL),
                    ("store_only", CHANNEL_STORE_ONLY),
                    ("online_only", CHANNEL_ONLINE_ONLY),
                )
            },
        }
        rfm = "NULL::bigint"
        if edges is not None:
            rfm = _RFM_GROUP
            params["rfm_grid"] = [
                ids.get(rfm_tag_key(rfm_group(r, fm, fm))) for r in range(1, 6) for fm in range(1, 6)
            ]
            params.update(_edge_params(edges))
        with connection.cursor() as cursor:
            cursor.execute(_COMPUTED_TAGS_DIFF.format(rfm=rfm), params)
            return cursor.rowcount


def _edge_params(edges: RfmEdges) -> dict[str, Any]:
    named: dict[str, Any] = {}
    quartets = zip(edges.recency, edges.frequency, edges.monetary, strict=True)
    for index, (recency, frequency, monetary) in enumerate(quartets, start=1):
        named[f"r{index}"], named[f"f{index}"], named[f"m{index}"] = recency, frequency, Decimal(monetary)
    return named
