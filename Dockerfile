# sizer: the API (`sizer serve`) and, with another command, the worker and the migrations.
# The builder installs everything into /opt/venv; the runtime image gets only that venv and the source.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, pinned, from the CPU index: the default index's build pulls several GB of CUDA packages
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /app
COPY pyproject.toml ./
COPY backend ./backend
# editable: the package finds alembic.ini, migrations/ and models/ next to backend/ (as in a checkout)
RUN pip install -e .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --create-home --uid 10001 sizer
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY pyproject.toml alembic.ini ./
COPY backend ./backend
COPY migrations ./migrations
COPY models ./models
RUN mkdir data && chown sizer:sizer data
USER sizer
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz\", timeout=4)"]
# off loopback the service refuses to start without SIZER_API_KEY
CMD ["sizer", "serve", "--host", "0.0.0.0"]
