# The CDS service image: a plain wheel install, run as an unprivileged user.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CDS_DATA_DIR=/var/lib/cds
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
COPY cards ./cards
COPY fixtures/fhir/demo ./fixtures/fhir/demo
RUN pip install --no-cache-dir . && rm -rf /app/cds_service /app/cards /app/fixtures \
    && mkdir -p /var/lib/cds && chown nobody:nogroup /var/lib/cds && chmod 0700 /var/lib/cds
USER nobody
EXPOSE 8080
CMD ["cds-service", "serve", "--host", "127.0.0.1", "--port", "8080"]
