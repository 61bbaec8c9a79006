# Astro Runtime 3.3 = Apache Airflow 3.3 (the local stack pins apache-airflow==3.3.2 in
# requirements-dev.txt: keep the two in step when upgrading). Its ONBUILD steps copy this project
# to /usr/local/airflow and install packages.txt and requirements.txt.
FROM astrocrpublic.azurecr.io/runtime:3.3-2

# dbt lives in its own virtualenv, as Cosmos documents: dbt's and Airflow's dependency trees
# never have to agree. Cosmos finds it through include/orchestration (DBT_VENV_PATHS).
COPY --chown=astro:0 requirements-dbt.txt /tmp/requirements-dbt.txt
RUN python -m venv /usr/local/airflow/dbt_venv \
 && /usr/local/airflow/dbt_venv/bin/pip install --no-cache-dir -r /tmp/requirements-dbt.txt

# Build the dbt manifest at image build time: Cosmos renders the DAGs from it, so parsing a DAG
# never runs dbt (the same command as `make dbt-manifest` locally).
RUN python -m include.orchestration.manifest

# dbt docs in the Airflow UI (Cosmos's Airflow 3 plugin reads them where the dbt_docs task writes them,
# include/orchestration/docs.py). This default is `astro dev start`'s shared landing volume; a
# deployment overrides it with its bucket and Connection (docs/deploying.md).
ENV AIRFLOW__COSMOS__DBT_DOCS_PROJECTS='{"ecommerce": {"dir": "/usr/local/airflow/landing/dbt-docs/ecommerce", "name": "E-commerce dbt docs", "index": "index.html"}}' \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False \
    AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1 \
    AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.25 \
    AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=300
