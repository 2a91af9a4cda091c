import re

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from members.consent.statements import ALL_MARKETING, CONSENT_TRAIT

_PURPOSE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class ConsentConfig(AppConfig):
    name = "members.consent"
    label = "consent"
    verbose_name = "Consent"

    def ready(self) -> None:
        purposes = settings.CONSENT_PURPOSES
        bad = [p for p in purposes if not _PURPOSE.fullmatch(p) or p in (ALL_MARKETING, "version", "state")]
        if bad or not purposes or len(set(purposes)) != len(purposes):
            raise ImproperlyConfigured(
                f"CONSENT_PURPOSES must be distinct names in lower case ([a-z][a-z0-9_]*), not "
                f"{ALL_MARKETING!r}, 'version' or 'state'; got {purposes!r}"
            )
        if settings.MARKETING_CONSENT_TRAIT == CONSENT_TRAIT:
            raise ImproperlyConfigured(
                f"MARKETING_CONSENT_TRAIT cannot be {CONSENT_TRAIT!r}: that trait holds consent per purpose"
            )
