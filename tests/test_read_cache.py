"""Coalesced polled reads (services/api/read_cache.py): shared within the TTL, refreshed after it, never
kept when they fail, and cleared by every write through the API."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update

from integration import harness
from services.api.read_cache import ReadCache
from services.common.db import sessionmaker_for
from services.common.models import Round
from services.workers.celery_app import app as celery_app


def _counting_read(result="value", delay_s: float = 0.01):
    calls = []

    async def read():
        calls.append(1)
        number = len(calls)
        await asyncio.sleep(delay_s)
        return f"{result}{number}"

    return read, calls


def test_concurrent_reads_of_one_key_share_one_read():
    async def main():
        cache = ReadCache(ttl_s=60)
        read, calls = _counting_read()
        results = await asyncio.gather(*(cache.get("k", read) for _ in range(50)), cache.get("other", read))
        return results, calls

    results, calls = asyncio.run(main())
    assert results[:50] == ["value1"] * 50
    assert results[50] == "value2" and len(calls) == 2


def test_a_read_is_repeated_after_the_ttl_and_when_off():
    async def main(ttl_s):
        cache = ReadCache(ttl_s=ttl_s)
        read, calls = _counting_read()
        first = await cache.get("k", read)
        await asyncio.sleep(0.1)
        return first, await cache.get("k", read), len(calls)

    assert asyncio.run(main(0.05)) == ("value1", "value2", 2)
    assert asyncio.run(main(0)) == ("value1", "value2", 2)


def test_the_cache_holds_only_the_reads_of_the_last_ttl():
    async def main():
        cache = ReadCache(ttl_s=0.05)
        read, _calls = _counting_read(delay_s=0)
        for i in range(100):
            await cache.get(i, read)
        held = len(cache)
        await asyncio.sleep(0.1)
        await cache.get("new", read)
        return held, len(cache)

    assert asyncio.run(main()) == (100, 1)


def test_a_failed_read_is_not_kept():
    async def main():
        cache = ReadCache(ttl_s=60)
        attempts = []

        async def flaky():
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("database went away")
            return "ok"

        with pytest.raises(RuntimeError):
            await cache.get("k", flaky)
        return await cache.get("k", flaky)

    assert asyncio.run(main()) == "ok"


@pytest.fixture
def client(tmp_path, monkeypatch, synth_dataset):
    settings = harness.service_settings(monkeypatch, tmp_path, harness.data_root_with(tmp_path, synth_dataset))
    settings.read_cache_ms = 60_000  # long enough that only a write can refresh a read in this test
    celery_app.conf.task_always_eager = True
    try:
        with harness.api_client(settings) as client:
            yield client, settings
    finally:
        celery_app.conf.task_always_eager = False


def test_reads_show_outside_changes_after_the_ttl_and_api_writes_at_once(client):
    client, settings = client
    dataset_id = client.post("/api/datasets", json={"name": "synth", "path": "synth"}).json()["id"]
    run_id = client.post("/api/runs", json={"dataset_id": dataset_id, "config": {"profile": "tiny"}}).json()["id"]
    round_id = client.post(f"/api/runs/{run_id}/rounds").json()["id"]
    assert client.get(f"/api/rounds/{round_id}").json()["status"] == "succeeded"

    with sessionmaker_for(settings.database_url)() as session, session.begin():  # a worker's write
        session.execute(update(Round).where(Round.id == round_id).values(status="failed"))
    assert client.get(f"/api/rounds/{round_id}").json()["status"] == "succeeded", "shared within the TTL"

    client.post("/api/datasets", json={"name": "again", "path": "synth"})  # any write through the API
    assert client.get(f"/api/rounds/{round_id}").json()["status"] == "failed"
