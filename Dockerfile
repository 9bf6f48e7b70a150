# syntax=docker/dockerfile:1
# One image for every Syndicate process: web, migrate, the Celery workers and beat.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SYNDICATE_DATA_DIR=/data

WORKDIR /app

# The dependencies first, in a layer of their own: read from pyproject.toml alone, they are installed again
# only when it changes, not on every change to the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Then the code: syndicate itself, with no dependency left to fetch.
COPY README.md ./
COPY templates ./templates
COPY src ./src
RUN pip install --no-cache-dir --no-deps '.[postgres]' \
 && useradd --system --create-home --uid 10001 syndicate \
 && mkdir -p /data \
 && chown syndicate:syndicate /data

USER syndicate
VOLUME ["/data"]
EXPOSE 8000
CMD ["syndicate", "web", "--host", "0.0.0.0", "--port", "8000"]
