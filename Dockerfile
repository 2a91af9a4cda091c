FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The image runs production: DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DATABASE_URL and
# PRIVACY_FINGERPRINT_KEY must be given at run time (config/settings/production.py); docker-compose.yml chooses local settings.
ENV DJANGO_SETTINGS_MODULE=config.settings.production
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# The static files the app serves (WhiteNoise): gathered, hashed and compressed once, here. The
# production settings insist on their variables; collectstatic uses none of them.
RUN DJANGO_SECRET_KEY=collectstatic-only DJANGO_ALLOWED_HOSTS=localhost DATABASE_URL=postgres://unused/unused \
    PRIVACY_FINGERPRINT_KEY=collectstatic-only python manage.py collectstatic --noinput -v 0
EXPOSE 8000
# config/granian.py: granian (a native HTTP server) calling config.wsgi, one worker process per
# core with 4 blocking threads (WEB_WORKERS, WEB_THREADS), keep-alive, an access log on stdout that
# records no write key, token or query string, and the metrics of a worker that exits dropped.
# Why granian and not gunicorn: docs/scaling.md ("The web server"). gunicorn stays installed:
# `gunicorn -c python:config.gunicorn config.wsgi --bind 0.0.0.0:8000` serves the same app.
CMD ["python", "-m", "config.granian", "--host", "0.0.0.0", "--port", "8000"]
