"""What an erasure asks of imports (``members.privacy.services.member_erase``): a problem the
import reported quotes the value it refused (a phone that is no phone, an email with a typo),
so the person's values are redacted out of the problems' text. Jobs and counts stay."""

from django.db.models import Q

from cdp.redaction import Redactor
from members.imports.models import ImportProblem


def import_problems_redact(*, redactor: Redactor) -> int:
    """The person's values out of every import problem's reason; returns how many changed.
    The literal forms find the rows: a pass without an index, bounded by the problems kept."""
    if not redactor:
        return 0
    mentioning = Q()
    for form in redactor.forms:
        mentioning |= Q(reason__icontains=form)
    changed = 0
    for problem in ImportProblem.objects.filter(mentioning).only("pk", "reason"):
        reason = redactor.text(problem.reason)
        if reason != problem.reason:
            ImportProblem.objects.filter(pk=problem.pk).update(reason=reason)
            changed += 1
    return changed
