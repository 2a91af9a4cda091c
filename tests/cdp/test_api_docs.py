"""The API docs pages reference only the app's own files and forbid the browser any other host
(the browser test checks what a real browser loads)."""

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_the_docs_load_their_assets_from_the_app(path):
    response = Client().get(path)
    page = response.content.decode()

    assert response.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets
    assert all(url.startswith("/") and not url.startswith("//") for url in assets), assets
    assert "fonts.googleapis.com" not in page
    assert "default-src 'self'" in response["Content-Security-Policy"]


def test_the_swagger_start_up_script_is_a_file_of_the_app():
    page = Client().get("/api/docs/").content.decode()
    [script] = [src for src in re.findall(r'<script src="([^"]+)"', page) if "script" in src.split("?")[-1]]

    assert Client().get(script).status_code == 200
