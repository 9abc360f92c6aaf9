# syntax=docker/dockerfile:1
# Kontext Gateway: a small image that runs as a non-root user.
#   docker build -t kontext-gateway:0.1.0 .
#   docker run -p 8000:8000 -v gateway-data:/data kontext-gateway:0.1.0
# Without GATEWAY_WAVESPEED_API_KEY it serves with the built-in WaveSpeed simulator.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so code changes reuse this layer.
COPY pyproject.toml ./
RUN python -m venv /opt/venv \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && /opt/venv/bin/pip install -r requirements.txt

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    GATEWAY_LOG_FORMAT=json \
    GATEWAY_DATABASE_URL=sqlite:////data/gateway.db
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --no-create-home --shell /usr/sbin/nologin gateway \
 && mkdir /data && chown gateway:gateway /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The code and the OpenAPI document it serves at /openapi.json.
COPY gateway ./gateway
COPY openapi ./openapi
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["python", "-m", "gateway"]
CMD ["serve"]
