# Multi-stage: resolve and install the locked dependencies in a builder, ship only the virtualenv.
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY operator ./operator
# uv.lock pins every version and hash; --no-emit-project leaves the operator itself to the last step.
RUN uv export --frozen --no-emit-project --format requirements-txt -o /tmp/requirements.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --require-hashes -r /tmp/requirements.txt \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root; the Deployment also sets readOnlyRootFilesystem and drops every capability.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["paiflow-operator"]
