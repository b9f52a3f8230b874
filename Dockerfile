# The ants-nats image used by compose.yaml: the library, its CLI and the services.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ants_nats ants_nats
COPY services services
RUN pip install --no-cache-dir .
USER nobody
