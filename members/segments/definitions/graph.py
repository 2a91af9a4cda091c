"""The graph of what rules read: a rule tag or dynamic segment reads the tags and segments its
rule names. A rule may only name what exists and may not lead back to itself; what a rule
reads may not be deleted."""

from collections import deque
from typing import Literal

from django.conf import settings

from members.segments.definitions.writes import DefinitionRefused
from members.segments.models import Segment, Tag
from members.segments.rules.analysis import rule_consent_paths, rule_reference_paths, rule_trait_paths
from members.segments.rules.parse import RuleInvalid, rule_parse
from members.segments.rules.syntax import rule_path

Node = tuple[Literal["tag", "segment"], str]


def _rule_of(rule: object) -> frozenset[Node]:
    """What a stored rule reads (nothing if it no longer parses: it decides nothing)."""
    try:
        return frozenset((k, key) for k, key, _ in rule_reference_paths(rule_parse(rule)))
    except RuleInvalid:
        return frozenset()


def _graph() -> tuple[dict[Node, frozenset[Node]], set[Node]]:
    """What every rule tag and dynamic segment reads, and every tag and segment there is (two
    queries: definitions are few)."""
    reads: dict[Node, frozenset[Node]] = {}
    exists: set[Node] = set()
    for key, kind, rule in Tag.objects.values_list("key", "kind", "rule"):
        exists.add(("tag", key))
        if kind == Tag.Kind.RULE:
            reads[("tag", key)] = _rule_of(rule)
    for key, kind, rule in Segment.objects.values_list("key", "kind", "rule"):
        exists.add(("segment", key))
        if kind == Segment.Kind.DYNAMIC:
            reads[("segment", key)] = _rule_of(rule)
    return reads, exists


def _field(path: str) -> str:
    return rule_path("rule", path) if path else "rule"


def rule_check(node: Node, rule: object) -> None:
    """Refuse a rule that is not valid (every error by path), reads a tag or segment that does
    not exist or a consent purpose that is not configured (``CONSENT_PURPOSES``), or leads back
    to ``node`` through what it reads."""
    if rule is None:
        raise DefinitionRefused("A rule is required.", [("rule", "is required")])
    try:
        condition = rule_parse(rule)
    except RuleInvalid as error:
        raise DefinitionRefused(
            "The rule is not valid.", [(_field(path), reason) for path, reason in error.errors]
        ) from error
    reads, exists = _graph()
    references = list(rule_reference_paths(condition))
    reads[node] = frozenset((kind, key) for kind, key, _ in references)
    errors = [
        (_field(path), f"no consent purpose {purpose!r}; one of {', '.join(settings.CONSENT_PURPOSES)}")
        for purpose, path in rule_consent_paths(condition)
        if purpose not in settings.CONSENT_PURPOSES
    ]
    # Sealed at rest (cdp.vault): the full recompute in SQL cannot read their values, so a rule
    # may only ask whether they are there (its SQL and its Python must agree).
    errors += [
        (_field(rule_path(path, "op")), f"trait {key!r} is sealed at rest (PRIVACY_SEALED_TRAITS): "
         "a rule may only ask whether it exists or not (op exists / not_exists)")
        for key, op, path in rule_trait_paths(condition)
        if key in settings.PRIVACY_SEALED_TRAITS and op not in ("exists", "not_exists")
    ]  # fmt: skip
    for kind, key, path in references:
        if (kind, key) not in exists and (kind, key) != node:
            errors.append((_field(path), f"no {kind} {key!r}"))
            continue
        cycle = _path_back(reads, (kind, key), node)
        if cycle is not None:
            chain = " → ".join(f"{k} {name!r}" for k, name in [node, *cycle])
            errors.append((_field(path), f"reads back the {node[0]} itself: {chain}"))
    if errors:
        raise DefinitionRefused("The rule reads what does not exist or what reads it back.", errors)


def _path_back(reads: dict[Node, frozenset[Node]], start: Node, target: Node) -> list[Node] | None:
    """The nodes from ``start`` to ``target`` following what rules read, or None."""
    came_from: dict[Node, Node | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == target:
            path: list[Node] = []
            at: Node | None = node
            while at is not None:
                path.append(at)
                at = came_from[at]
            return path[::-1]
        for nxt in sorted(reads.get(node, ())):
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    return None


def unread_check(node: Node) -> None:
    """Refuse to delete what a rule reads, naming the readers."""
    reads, _ = _graph()
    readers = sorted(reader for reader, read in reads.items() if node in read and reader != node)
    if readers:
        names = ", ".join(f"{kind} {key!r}" for kind, key in readers)
        raise DefinitionRefused(
            f"The {node[0]} {node[1]!r} is read by {names}: change or delete those first.",
            [("key", f"read by {names}")],
            status=409,
        )
