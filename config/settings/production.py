"""Production: the default of ``config/wsgi.py`` and ``config/asgi.py`` (and the Dockerfile's).

No defaults for secrets or for where the data lives: without ``DJANGO_SECRET_KEY``,
``DJANGO_ALLOWED_HOSTS`` or ``DATABASE_URL`` the process fails at start-up, naming the
variable. Everything else defaults to what is safe on the internet, and each can be relaxed
through the environment: HTTPS only (redirect, secure cookies, HSTS), behind a proxy that
terminates TLS and says so in ``X-Forwarded-Proto``. The app serves its own static files.
``manage.py check --deploy`` reports nothing with these defaults (tests/config/test_production.py).
"""

from config.settings.base import *  # noqa: F403
from config.settings.base import LOGGING, MIDDLEWARE, env

DEBUG = False
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
env("DATABASE_URL")  # required here; base falls back to the local database for development
#: Its own secret, never derived from the secret key (which may be rotated): see base.py.
PRIVACY_FINGERPRINT_KEY = env("PRIVACY_FINGERPRINT_KEY")
#: Phones, emails and names at rest: the sealing keys and the blind index key (see base.py).
PRIVACY_SEALING_KEYS = env("PRIVACY_SEALING_KEYS")
PRIVACY_BLIND_INDEX_KEY = env("PRIVACY_BLIND_INDEX_KEY")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
#: JSON log lines for the log shipper (base.py); LOG_FORMAT=plain for a terminal.
LOG_FORMAT = env("LOG_FORMAT", default="json")
LOGGING["handlers"]["console"]["formatter"] = "json" if LOG_FORMAT == "json" else "plain"
#: /metrics: a token or networks must be given (base.py); nobody may scrape otherwise.
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=[])

# --- HTTPS --------------------------------------------------------------------------------------
# The proxy (load balancer, nginx) terminates TLS and sets this header to "https"; it must
# overwrite any value a client sends. Empty: no proxy, Django sees TLS itself.
_PROXY_SSL_HEADER = env("DJANGO_SECURE_PROXY_SSL_HEADER", default="HTTP_X_FORWARDED_PROTO")
SECURE_PROXY_SSL_HEADER = (_PROXY_SSL_HEADER, "https") if _PROXY_SSL_HEADER else None
#: Plain HTTP is redirected to HTTPS (off only where the proxy already does it).
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
#: Load balancers probe health over plain HTTP, inside the network.
SECURE_REDIRECT_EXEMPT = [r"^health/$"]
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
# No script reads either cookie: the console's forms carry the CSRF token in a hidden field.
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
# HSTS as cookiecutter-django sets it: start at 60 seconds, raise to a year
# (DJANGO_SECURE_HSTS_SECONDS=31536000) once HTTPS is known to work on every subdomain, since
# browsers then refuse plain HTTP for that long.
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = env.bool("DJANGO_SECURE_CONTENT_TYPE_NOSNIFF", default=True)

# --- Static files -------------------------------------------------------------------------------
# The web server (granian's static file option is not used) serves no static files, and nothing in front of it is required to: WhiteNoise serves
# what collectstatic gathered in STATIC_ROOT (the API docs' Swagger UI and ReDoc, the admin's
# styles), compressed, under names that carry their content's hash, so browsers keep them for
# good. Right after SecurityMiddleware, as WhiteNoise asks: HTTPS first, then before anything
# that reads a session or the database.
_AFTER_SECURITY = MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1
MIDDLEWARE = [
    *MIDDLEWARE[:_AFTER_SECURITY],
    "whitenoise.middleware.WhiteNoiseMiddleware",
    *MIDDLEWARE[_AFTER_SECURITY:],
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
