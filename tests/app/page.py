"""What the app tests read off a page run by Streamlit's AppTest: that it ran without an
exception, and the pydeck map it drew (shared by tests/app/test_app.py and test_catalog_scene.py)."""
from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest


def healthy(at: AppTest) -> None:
    """Fail with the page's exceptions when it raised any."""
    assert not at.exception, [e.value for e in at.exception]


def deck_spec(at: AppTest) -> dict:
    """The page's one pydeck map as its JSON spec."""
    charts = at.get("deck_gl_json_chart")
    assert len(charts) == 1, "expected one pydeck map"
    return json.loads(charts[0].proto.json)
