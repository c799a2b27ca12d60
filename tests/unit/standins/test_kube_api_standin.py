"""The Kubernetes API stand-in (tests/kube_standin) against the documented API behaviours.

From the API conventions (sig-architecture/api-conventions.md, "Concurrency Control and
Consistency", "Response Status Kind", "HTTP Status codes") and the API concepts page
("Efficient detection of changes", "Resource versions"): each write takes a new
resourceVersion; create of an existing name is 409 AlreadyExists; an update with a stale
resourceVersion is 409 Conflict; a missing object is 404 NotFound; failures are Status
objects; a watch from a compacted version gets 410 Gone (reason Expired); a watch streams
ADDED/MODIFIED/DELETED for what matches its selectors. The checks go through lightkube,
the client the backend uses, so the stand-in's wire format is what a real client parses.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jsonschema
import pytest
from kubernetes_validate.utils import schema_contents
from lightkube import ApiError, AsyncClient, Client, KubeConfig
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Pod
from referencing import Registry, Resource

from kube_standin import AsyncTransport, KubeApi, SyncTransport

NS = "t"


def config() -> KubeConfig:
    return KubeConfig.from_dict(
        {
            "clusters": [{"name": "s", "cluster": {"server": "http://kube.invalid"}}],
            "users": [{"name": "u", "user": {}}],
            "contexts": [{"name": "c", "context": {"cluster": "s", "user": "u"}}],
            "current-context": "c",
        }
    )


def sync(api: KubeApi) -> Client:
    return Client(config(), namespace=NS, transport=SyncTransport(api))


def cm(name: str, value: str = "1", version: str | None = None) -> ConfigMap:
    return ConfigMap(
        metadata=ObjectMeta(name=name, namespace=NS, resourceVersion=version), data={"k": value}
    )


def status_schema() -> jsonschema.Draft202012Validator:
    """Kubernetes' own schema of a Status (pinned kubernetes-validate, 1.33 strict)."""
    folder = "kubernetes-json-schema/v1.33.0-local-strict/"
    schema = schema_contents(folder + "status-meta-v1.json", "1.33.0")
    definitions = schema_contents(folder + "_definitions.json", "1.33.0")
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def failure(call: Any) -> dict[str, Any]:
    with pytest.raises(ApiError) as caught:
        call()
    body: dict[str, Any] = caught.value.response.json()
    status_schema().validate(body)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    return body


def test_each_write_takes_a_new_resource_version() -> None:
    api = KubeApi()
    client = sync(api)
    first = client.create(cm("a"))
    second = client.create(cm("b"))
    assert first.metadata and second.metadata
    assert int(second.metadata.resourceVersion or 0) > int(first.metadata.resourceVersion or 0)
    replaced = client.replace(cm("a", "2", first.metadata.resourceVersion))
    assert replaced.metadata and int(replaced.metadata.resourceVersion or 0) > int(
        second.metadata.resourceVersion or 0
    )


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("create twice", 409, "AlreadyExists"),
        ("stale update", 409, "Conflict"),
        ("get missing", 404, "NotFound"),
        ("delete missing", 404, "NotFound"),
        ("log of missing pod", 404, "NotFound"),
    ],
)
def test_failures_are_status_objects(case: str, code: int, reason: str) -> None:
    api = KubeApi()
    client = sync(api)
    made = client.create(cm("a"))
    assert made.metadata is not None
    stale = made.metadata.resourceVersion
    client.replace(cm("a", "2", stale))
    calls = {
        "create twice": lambda: client.create(cm("a")),
        "stale update": lambda: client.replace(cm("a", "3", stale)),
        "get missing": lambda: client.get(ConfigMap, "nope"),
        "delete missing": lambda: client.delete(ConfigMap, "nope"),
        "log of missing pod": lambda: list(client.log("nope")),
    }
    body = failure(calls[case])
    assert (body["code"], body["reason"]) == (code, reason)
    assert client.get(ConfigMap, "a").data == {"k": "2"}  # the refused write changed nothing


def test_label_selectors_filter_lists() -> None:
    api = KubeApi()
    client = sync(api)
    for name, team in (("a", "x"), ("b", "y"), ("c", "x")):
        client.create(ConfigMap(metadata=ObjectMeta(name=name, labels={"team": team})))
    names = [o.metadata.name for o in client.list(ConfigMap, labels={"team": "x"}) if o.metadata]
    assert names == ["a", "c"]


def test_watches_stream_changes_and_expire() -> None:
    async def body() -> None:
        api = KubeApi()
        client = AsyncClient(config(), namespace=NS, transport=AsyncTransport(api))
        made = await client.create(
            Pod(
                metadata=ObjectMeta(name="p"),
                spec=PodSpec(containers=[Container(name="runtime", image="i")]),
            )
        )
        assert made.metadata is not None
        start = made.metadata.resourceVersion
        seen: list[tuple[str, str | None]] = []

        async def watch() -> None:
            async for event, pod in client.watch(Pod, resource_version=start):
                seen.append((event, pod.status.phase if pod.status else None))
                if event == "DELETED":
                    return

        task = asyncio.create_task(watch())
        await asyncio.sleep(0)
        api.run_pod(NS, "p", "10.0.0.1")
        await client.delete(Pod, "p")
        await asyncio.wait_for(task, 5)
        assert seen == [("MODIFIED", "Running"), ("DELETED", "Running")]
        # Keep only the last event: a watch from the creation (2 writes ago) is 410 Gone,
        # one from the last write is not.
        api.history = 1
        await client.create(cm("after"))
        assert api.compacted > int(start or 0)
        with pytest.raises(ApiError) as gone:
            async for _ in client.watch(Pod, resource_version=start):
                pass
        assert (gone.value.status.code, gone.value.status.reason) == (410, "Expired")
        await client.close()

    asyncio.run(body())


def lease(holder: str, version: str | None = None) -> Lease:
    return Lease(
        metadata=ObjectMeta(name="leader", namespace=NS, resourceVersion=version),
        spec=LeaseSpec(holderIdentity=holder, leaseDurationSeconds=15, leaseTransitions=0),
    )


def test_leases_are_served_under_their_group_with_optimistic_concurrency() -> None:
    """Leader election's compare-and-swap: of two writers that read the same version, the
    second gets 409 Conflict and the Lease keeps the first's holder; creating an existing
    Lease is 409 AlreadyExists (two candidates starting at once)."""
    api = KubeApi()
    client = sync(api)
    made = client.create(lease("a"))
    assert made.metadata is not None
    assert ("leases", NS, "leader") in api.objects
    assert api.sent[-1][1] == f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
    read = made.metadata.resourceVersion
    client.replace(lease("b", read))
    body = failure(lambda: client.replace(lease("c", read)))
    assert (body["code"], body["reason"]) == (409, "Conflict")
    body = failure(lambda: client.create(lease("d")))
    assert (body["code"], body["reason"]) == (409, "AlreadyExists")
    got = client.get(Lease, "leader")
    assert got.spec is not None and got.spec.holderIdentity == "b"
    assert got.apiVersion == "coordination.k8s.io/v1"
    # Not served under the core group (the path names the group).
    assert api.handle("GET", f"/api/v1/namespaces/{NS}/leases/leader", {}, b"")[0] == 404
