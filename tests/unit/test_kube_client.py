"""The real KubernetesClient at the HTTP layer, against a stub API server on loopback: the requests it builds
(server-side apply with one field manager, merge patches, label selectors, watches) and how it maps API errors."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration

from tests.support import openbao
from tre.clients.kube import KubeConflictError, KubernetesClient, WatchExpiredError, label_selector
from tre.errors import (
    AuthenticationError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    TemporaryError,
    TreError,
)

POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "tre-default-deny", "namespace": "tre-alpha", "labels": {"tre.dev/project": "alpha"}},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []},
}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    lines: list[Any] | None = None  # a streamed watch: one JSON document per line


@dataclass
class Stub:
    """A loopback HTTP server that records each request and answers with ``respond(seen)``."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    respond: Callable[[Seen], Reply] = lambda seen: Reply()


def _request(handler: BaseHTTPRequestHandler) -> Seen:
    parts = urllib.parse.urlsplit(handler.path)
    length = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(length) if length else b""
    return Seen(
        handler.command,
        parts.path,
        urllib.parse.parse_qs(parts.query, keep_blank_values=True),
        {k.lower(): v for k, v in handler.headers.items()},
        json.loads(raw) if raw else None,
    )


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            seen = _request(self)
            stub.seen.append(seen)
            reply = stub.respond(seen)
            lines = reply.lines if reply.lines is not None else None
            payload = (
                b"".join(json.dumps(x).encode() + b"\n" for x in lines) if lines else json.dumps(reply.body).encode()
            )
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve()

        do_POST = do_PATCH = do_DELETE = do_GET  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def stub() -> Iterator[Stub]:
    stub = Stub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()


def answer(stub: Stub, respond: Callable[[Seen], Reply]) -> None:
    stub.respond = respond


@pytest.fixture
def client(stub: Stub) -> Iterator[KubernetesClient]:
    configuration = Configuration(host=stub.url, api_key={"authorization": "Bearer tok"})
    configuration.retries = False
    kube = KubernetesClient(ApiClient(configuration), field_manager="tre-controller", timeout=5)
    yield kube
    kube.close()


def test_apply_is_a_server_side_apply_with_one_field_manager(stub: Stub, client: KubernetesClient) -> None:
    answer(stub, lambda s: Reply(body={**POLICY, "metadata": {**POLICY["metadata"], "resourceVersion": "7"}}))
    stored = client.apply(POLICY, force=True)
    assert stored["metadata"]["resourceVersion"] == "7"
    request = stub.seen[-1]
    assert (request.method, request.path) == (
        "PATCH",
        "/apis/networking.k8s.io/v1/namespaces/tre-alpha/networkpolicies/tre-default-deny",
    )
    assert request.headers["content-type"] == "application/apply-patch+yaml"
    assert request.query == {"fieldManager": ["tre-controller"], "force": ["true"]}
    assert request.body == POLICY
    assert request.headers["authorization"] == "Bearer tok"


def test_status_is_applied_to_the_subresource_and_force_is_only_sent_when_asked(
    stub: Stub, client: KubernetesClient
) -> None:
    project = {"apiVersion": "tre.dev/v1alpha1", "kind": "Project", "metadata": {"name": "alpha"}, "status": {}}
    client.apply(project, subresource="status")
    assert stub.seen[-1].path == "/apis/tre.dev/v1alpha1/projects/alpha/status"
    assert stub.seen[-1].query == {"fieldManager": ["tre-controller"]}


def test_merge_patch_create_get_and_delete(stub: Stub, client: KubernetesClient) -> None:
    client.patch("tre.dev/v1alpha1", "Project", "alpha", {"metadata": {"finalizers": [], "resourceVersion": "3"}})
    assert stub.seen[-1].headers["content-type"] == "application/merge-patch+json"
    assert stub.seen[-1].body == {"metadata": {"finalizers": [], "resourceVersion": "3"}}

    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": "alpha.", "namespace": "tre"},
    }
    client.create(event)
    assert (stub.seen[-1].method, stub.seen[-1].path) == ("POST", "/apis/events.k8s.io/v1/namespaces/tre/events")

    answer(stub, lambda s: Reply(body={"metadata": {"name": "tre"}}))
    assert client.get("v1", "Namespace", "tre") == {"metadata": {"name": "tre"}}
    assert stub.seen[-1].path == "/api/v1/namespaces/tre"
    assert client.delete("batch/v1", "Job", "j", namespace="tre-alpha") is True
    assert stub.seen[-1].method == "DELETE"
    assert stub.seen[-1].body["propagationPolicy"] == "Background"

    answer(stub, lambda s: Reply(404, {"kind": "Status", "message": 'jobs "j" not found'}))
    assert client.get("batch/v1", "Job", "j", namespace="tre-alpha") is None
    assert client.delete("batch/v1", "Job", "j", namespace="tre-alpha") is False
    with pytest.raises(NotFoundError, match='jobs "j" not found'):
        client.apply({**POLICY})


def test_list_sends_the_label_selector_follows_pages_and_names_each_item(stub: Stub, client: KubernetesClient) -> None:
    pages = {
        "": {"items": [{"metadata": {"name": "a"}}], "metadata": {"continue": "next"}},
        "next": {"items": [{"metadata": {"name": "b"}}], "metadata": {}},
    }
    answer(stub, lambda s: Reply(body=pages[s.query.get("continue", [""])[0]]))
    labels = {"tre.dev/project": "alpha", "app.kubernetes.io/managed-by": "tre-controller"}
    items = client.list("networking.k8s.io/v1", "NetworkPolicy", labels=labels)
    assert [i["metadata"]["name"] for i in items] == ["a", "b"]
    assert {(i["apiVersion"], i["kind"]) for i in items} == {("networking.k8s.io/v1", "NetworkPolicy")}
    assert stub.seen[0].path == "/apis/networking.k8s.io/v1/networkpolicies"
    assert stub.seen[0].query["labelSelector"] == ["app.kubernetes.io/managed-by=tre-controller,tre.dev/project=alpha"]
    assert stub.seen[1].query["continue"] == ["next"]
    client.list("v1", "Pod", namespace="tre-alpha")
    assert stub.seen[-1].path == "/api/v1/namespaces/tre-alpha/pods"
    assert label_selector(None) == ""


def test_watch_yields_events_and_a_410_says_list_again(stub: Stub, client: KubernetesClient) -> None:
    lines = [
        {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}},
        {"type": "MODIFIED", "object": {"metadata": {"name": "a", "resourceVersion": "6"}}},
    ]
    answer(stub, lambda s: Reply(lines=lines))
    events = list(client.watch("tre.dev/v1alpha1", "Project", resource_version="4", timeout_seconds=30))
    assert [(e.type, e.object["metadata"]["resourceVersion"]) for e in events] == [("ADDED", "5"), ("MODIFIED", "6")]
    assert stub.seen[-1].query["watch"] == ["true"]
    assert stub.seen[-1].query["resourceVersion"] == ["4"]
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}
    answer(stub, lambda s: Reply(lines=[gone]))
    with pytest.raises(WatchExpiredError, match="too old"):
        list(client.watch("tre.dev/v1alpha1", "Project", resource_version="1"))


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (409, {}, KubeConflictError, None),
        (422, {}, InputError, None),
        (400, {}, InputError, None),
        (401, {}, AuthenticationError, None),
        (403, {}, PermissionDeniedError, None),
        (429, {"Retry-After": "7"}, TemporaryError, 7.0),
        (500, {}, TemporaryError, 1.0),
        (503, {}, TemporaryError, 1.0),
    ],
)
def test_api_errors_become_tre_errors(
    stub: Stub,
    client: KubernetesClient,
    status: int,
    headers: dict[str, str],
    error: type[TreError],
    retry_after: float | None,
) -> None:
    answer(stub, lambda s: Reply(status, {"kind": "Status", "code": status, "message": "the\nserver says no"}, headers))
    with pytest.raises(error) as caught:
        client.apply(POLICY, force=True)
    assert "NetworkPolicy tre-alpha/tre-default-deny" in str(caught.value)
    assert "the server says no" in str(caught.value)
    assert "\n" not in str(caught.value)
    if retry_after is not None:
        assert isinstance(caught.value, TemporaryError)
        assert caught.value.retry_after == retry_after


def test_an_unreachable_api_server_is_a_temporary_error() -> None:
    configuration = Configuration(host=f"http://127.0.0.1:{openbao.free_port()}")
    configuration.retries = False
    kube = KubernetesClient(ApiClient(configuration), field_manager="tre-controller", timeout=2)
    with pytest.raises(TemporaryError, match="unreachable"):
        kube.get("v1", "Namespace", "tre")


def test_bad_requests_are_refused_before_any_request(stub: Stub, client: KubernetesClient) -> None:
    with pytest.raises(InputError, match="does not know the kind"):
        client.get("apps/v1", "Deployment", "x", namespace="tre")
    with pytest.raises(InputError, match="needs a namespace"):
        client.get("v1", "ConfigMap", "x")
    with pytest.raises(InputError, match="no status subresource"):
        client.apply(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "n"}}, subresource="status"
        )
    with pytest.raises(InputError, match="without name"):
        client.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})
    assert stub.seen == []


def test_credentials_come_from_a_kubeconfig(stub: Stub, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": stub.url}}],
                "users": [{"name": "u", "user": {"token": "from-kubeconfig"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    kube = KubernetesClient.from_environment(field_manager="tre-controller", kubeconfig=kubeconfig)
    kube.get("v1", "Namespace", "tre")
    assert stub.seen[-1].headers["authorization"] == "Bearer from-kubeconfig"
    assert "from-kubeconfig" not in repr(kube)
    kube.close()
    (tmp_path / "broken").write_text("clusters: [")
    with pytest.raises(InputError, match="cannot load Kubernetes credentials"):
        KubernetesClient.from_environment(field_manager="tre-controller", kubeconfig=tmp_path / "broken")
