# syntax=docker/dockerfile:1
# One image for every Syndicate process: web, migrate, the Celery workers and beat.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SYNDICATE_DATA_DIR=/data

WORKDIR /app
COPY . .
RUN pip install --no-cache-dir '.[postgres]' \
 && useradd --system --create-home --uid 10001 syndicate \
 && mkdir -p /data \
 && chown syndicate:syndicate /data

USER syndicate
VOLUME ["/data"]
EXPOSE 8000
CMD ["syndicate", "web", "--host", "0.0.0.0", "--port", "8000"]
