"""Upserts Connections, Variables and Pools into Airflow's metadata database.

Run by the local stack as ``python -m dev.airflow_objects '<json>'`` inside the Airflow
environment (one process instead of three slow ``airflow ... import`` CLI calls). The JSON is
the localized content of ``airflow_settings.yaml`` (see ``dev.stack``).
"""

from __future__ import annotations

import json
import sys

from airflow.models import Connection, Pool, Variable
from airflow.utils.session import create_session
from sqlalchemy import delete


def upsert(payload: dict) -> None:
    with create_session() as session:
        for conn_id, body in payload["connections"].items():
            session.execute(delete(Connection).where(Connection.conn_id == conn_id))
            session.add(Connection(conn_id=conn_id, **body))
        for key, value in payload["variables"].items():
            Variable.set(key, value, session=session)
        for pool in payload["pools"]:
            Pool.create_or_update_pool(
                pool["name"], pool["slots"], pool["description"], include_deferred=False, session=session
            )


if __name__ == "__main__":
    upsert(json.loads(sys.argv[1]))
    print("connections, variables and pools imported")
