# Cairn's api and worker image (docker-compose.yml builds it for both services).
#
#   docker build -t cairn .
#   docker run --rm cairn cairn --help
#
# The same image runs `cairn api` (the default command) and `cairn worker`; everything else comes
# from CAIRN_* environment variables (see cairn/settings.py and the README's configuration table).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user owns the process and its state folder; nothing runs as root.
RUN groupadd --system --gid 10001 cairn \
    && useradd --system --uid 10001 --gid cairn --create-home --home-dir /home/cairn cairn

WORKDIR /app

# Dependencies and code first, the catalog last: editing a journey does not reinstall anything.
COPY pyproject.toml README.md worker.py ./
COPY cairn ./cairn
COPY workflows ./workflows
COPY activities ./activities
COPY starter ./starter
RUN pip install . \
    && python -c "import asyncpg, cairn.store.db, workflows, activities, starter.cli.main"

COPY journeys ./journeys

USER cairn
ENV CAIRN_HOME=/home/cairn/.cairn \
    CAIRN_JOURNEYS_DIR=/app/journeys \
    CAIRN_API_HOST=0.0.0.0 \
    CAIRN_API_PORT=8000 \
    CAIRN_LOG_JSON=true

EXPOSE 8000
CMD ["cairn", "api"]
