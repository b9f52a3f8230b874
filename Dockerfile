# The ants-nats image used by compose.yaml: the library, its CLI and the services.
#
#   docker build -t ants-nats:dev .       installs this source tree from PyPI's dependencies
#
# Offline (no registry, as scripts/containers builds it here with podman): a Debian base image made
# locally and a wheelhouse made on the host with `pip wheel`:
#
#   podman build --build-arg BASE=localhost/ants-nats-base:<tag> --build-arg INSTALL=wheelhouse .
#
# where build/containers/wheelhouse/ holds deps/ (every dependency's wheel) and project/ (this
# project's wheel). Stages that the chosen INSTALL does not need are skipped (BuildKit, buildah), so
# the default build needs no wheelhouse and the offline one never reaches the index.
ARG BASE=python:3.11-slim
ARG INSTALL=source

FROM ${BASE} AS base
# A virtual environment, so the same steps work on python:3.11-slim and on Debian's own python3
# (whose system site-packages pip refuses to touch, PEP 668).
RUN python3 -m venv /opt/ants-nats
ENV PATH=/opt/ants-nats/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /app

FROM base AS from-source
COPY pyproject.toml README.md /src/
COPY ants_nats /src/ants_nats
COPY services /src/services
RUN pip install --no-cache-dir '/src[agent-protocol]' && rm -rf /src

FROM base AS from-wheelhouse
# Dependencies first, in a layer of their own: a change to the project alone reuses it.
COPY build/containers/wheelhouse/deps /wheels/deps
RUN pip install --no-cache-dir --no-index /wheels/deps/*.whl
COPY build/containers/wheelhouse/project /wheels/project
RUN pip install --no-cache-dir --no-index --find-links /wheels/deps /wheels/project/*.whl \
    && rm -rf /wheels

FROM from-${INSTALL}
# Least privilege by default; compose.yaml runs the services as root without capabilities, which
# lets them read their seed files (mode 600, owned by whoever generated them).
USER nobody
