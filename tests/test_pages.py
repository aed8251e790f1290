"""The pages a browser loads: each names its icon, and ``/favicon.ico`` is never a 404."""

import re

import pytest


@pytest.mark.parametrize("path", ["/", "/_emulator/phone", "/no-such-page"])
def test_every_page_names_an_icon_that_is_served(client, path):
    page = client.get(path).get_data(as_text=True)

    [icon] = re.findall(r'<link rel="icon" type="image/svg\+xml" href="([^"]+)">', page)
    with client.get(icon) as served:
        assert served.status_code == 200
        assert served.mimetype == "image/svg+xml"


def test_favicon_ico_leads_to_the_icon(client):
    # Asked for by browsers on pages that name no icon (a JSON answer opened in a tab).
    with client.get("/favicon.ico", follow_redirects=True) as answer:
        assert answer.status_code == 200
        assert answer.mimetype == "image/svg+xml"
