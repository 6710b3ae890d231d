"""Fixtures for the app's unit tests: an app per test, Flask-SocketIO test clients (threading mode)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask_socketio import SocketIO, SocketIOTestClient

from app import create_app
from app.config import Config

ADMIN_SECRET = "unit-test-secret"


@pytest.fixture
def config() -> Config:
    return Config(admin_secret=ADMIN_SECRET, instance_id="unit:1", max_message_bytes=10_000)


@pytest.fixture
def app(config: Config) -> Flask:
    return create_app(config, async_mode="threading")


@pytest.fixture
def socketio(app: Flask) -> SocketIO:
    return app.extensions["socketio"]


@pytest.fixture
def connect(app: Flask, socketio: SocketIO) -> Iterator[Callable[..., SocketIOTestClient]]:
    clients: list[SocketIOTestClient] = []

    def _connect(namespace: str = "/", auth: Any = None) -> SocketIOTestClient:
        client = socketio.test_client(app, namespace=namespace, auth=auth)
        clients.append(client)
        return client

    yield _connect
    for client in clients:
        for ns in list(client.connected):
            if client.connected.get(ns):
                client.disconnect(namespace=ns)


@pytest.fixture
def received() -> Callable[..., list[Any]]:
    def _received(client: SocketIOTestClient, name: str, namespace: str = "/") -> list[Any]:
        """Payloads of the `name` events the client got so far (consumes its receive buffer)."""
        return [r["args"][0] for r in client.get_received(namespace) if r["name"] == name]

    return _received
