import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from factory.django import DjangoModelFactory

from cdp.credentials import credential_hash, credential_new, credential_prefix
from cdp.models import ApiToken


class UserFactory(DjangoModelFactory[User]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True


class StaffTokenFactory(DjangoModelFactory[ApiToken]):
    """An API token; the clear secret is on ``token.secret`` (only its hash is stored)."""

    class Meta:
        model = ApiToken

    user = factory.SubFactory(UserFactory)
    name = "test"
    secret = factory.LazyFunction(lambda: credential_new(kind="cdp"))

    @classmethod
    def _create(cls, model_class: type[ApiToken], *args: object, secret: str, **kwargs: object) -> ApiToken:
        token = super()._create(
            model_class,
            *args,
            key_hash=credential_hash(secret),
            key_prefix=credential_prefix(secret),
            **kwargs,
        )
        token.secret = secret
        return token
