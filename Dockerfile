# One image for every candlelake process in docker-compose.yaml: the four Airflow processes, the Spark
# streaming job, the producer and the dashboard. They share code, pins and jars, and Airflow's
# LocalExecutor runs Spark batch tasks in the scheduler's container, so one image keeps them in step.
#
#   docker compose build        (docker-compose.yaml builds it as candlelake:local)

# --- stage 1: the Spark Kafka connector's jars, resolved from Maven Central by the project's own resolver
# (candlelake/platform/maven.py, stdlib only) from the pinned build/maven/spark-kafka/pom.xml, exactly as
# `candlelake install` does locally. Maven and the JDK stay in this stage.
# bookworm, not the newer default: it is the Debian release that ships OpenJDK 17.
FROM python:3.11-slim-bookworm AS jars
RUN apt-get update \
    && apt-get install -y --no-install-recommends maven openjdk-17-jdk-headless \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/candlelake
COPY build/maven build/maven
COPY include/candlelake/__init__.py include/candlelake/config.py include/candlelake/
COPY include/candlelake/platform/__init__.py include/candlelake/platform/maven.py include/candlelake/platform/runtime.py include/candlelake/platform/
RUN PYTHONPATH=include python -c "from candlelake.config import load_settings; \
from candlelake.platform import maven; print(maven.resolve(load_settings(), 'spark-kafka', 'stream'))" \
    && rm -rf .cache/m2

# --- stage 2: the runtime
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Java 17 for Spark 4 (streaming job, nightly batch tasks); procps because Spark's launch scripts call `ps`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/candlelake
# Pins first: this layer (the slow one) is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY pyproject.toml ./
COPY include include
# Editable like `make setup`: config.PROJECT_ROOT is then /opt/candlelake, where dags/, jobs/, dashboard/
# and the .runtime/.cache folders are.
RUN pip install --no-deps -e .
COPY dags dags
COPY jobs jobs
COPY dashboard dashboard
COPY --from=jars /opt/candlelake/.cache/jars .cache/jars
# Not root. The folders that compose mounts named volumes on exist here, owned by this user, so Docker
# copies that ownership into each new volume.
RUN useradd --uid 50000 --gid 0 --create-home --shell /bin/bash candlelake \
    && mkdir -p .runtime/lake .runtime/checkpoints .runtime/airflow/logs .runtime/logs .runtime/reports/data_docs \
    && chown -R 50000:0 .runtime
USER 50000
CMD ["candlelake", "--help"]
