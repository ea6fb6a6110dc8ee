"""docker-compose.yml is kept correct by reading (no Docker engine runs here) and by this test:
it parses the file and checks it against what gpt2sql and the README rely on."""

from __future__ import annotations

import re

import yaml

from conftest import ROOT
from gpt2sql.db import EMBEDDED_SETTINGS


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def server_settings(service: dict) -> dict[str, str]:
    cmd = service["command"]
    assert cmd[0] == "postgres"
    pairs = cmd[1:]
    assert pairs[::2] == ["-c"] * (len(pairs) // 2)
    return dict(p.split("=", 1) for p in pairs[1::2])


def test_compose_runs_postgresql_18_with_pgvector_and_the_embedded_servers_settings():
    svc = compose()["services"]["postgres"]
    assert svc["image"] == "pgvector/pgvector:pg18"            # postgres:18 plus the vector extension
    settings = server_settings(svc)
    assert {k: settings[k] for k in EMBEDDED_SETTINGS} == EMBEDDED_SETTINGS
    assert settings["jit"] == "off"
    # 18+ images keep their data in /var/lib/postgresql (a volume at .../data would be left empty)
    assert svc["volumes"] == ["gpt2sql-data:/var/lib/postgresql"] and "gpt2sql-data" in compose()["volumes"]
    env = svc["environment"]
    health = " ".join(svc["healthcheck"]["test"])
    assert f"-U {env['POSTGRES_USER']}" in health and f"-d {env['POSTGRES_DB']}" in health
    assert svc["ports"] == ["5432:5432"]


def test_the_deployment_guide_connects_to_what_compose_starts():
    """docs/deployment.md (where the README sends compose users) names compose's URL and image."""
    env = compose()["services"]["postgres"]["environment"]
    url = f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@localhost:5432/{env['POSTGRES_DB']}"
    guide = (ROOT / "docs" / "deployment.md").read_text()
    assert f"export DATABASE_URL={url}" in guide
    assert re.search(r"pgvector/pgvector:pg18", guide)
    assert "docs/deployment.md" in (ROOT / "README.md").read_text()
