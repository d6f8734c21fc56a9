# livepulse worker / simulator image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY agents ./agents
COPY online_models ./online_models
COPY config ./config
COPY dashboards ./dashboards
RUN pip install --no-cache-dir --prefix=/install ".[rocksdb]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 livepulse
COPY --from=build /install /usr/local
USER livepulse
WORKDIR /home/livepulse
ENV LIVEPULSE_WEB_HOST=0.0.0.0 \
    LIVEPULSE_WEB_PORT=6066 \
    LIVEPULSE_DATA_DIR=/home/livepulse/data \
    PYTHONUNBUFFERED=1
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LIVEPULSE_WEB_PORT','6066'), timeout=2)"
ENTRYPOINT ["livepulse"]
CMD ["worker"]
