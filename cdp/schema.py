"""OpenAPI (drf-spectacular) description of the staff API's authentication."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class StaffTokenScheme(OpenApiAuthenticationExtension):
    target_class = "cdp.authentication.StaffTokenAuthentication"
    name = "staffToken"

    def get_security_definition(self, auto_schema: object) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A staff token from `manage.py create_token USERNAME --role ROLE`, sent as "
            "`Authorization: Bearer <token>` (or `Authorization: Token <token>`).",
        }
