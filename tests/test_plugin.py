"""The README's example plugin, installed as a package, adds a job type through the entry point group."""

from __future__ import annotations

import json

from conftest import DataDir, run_burst


def test_example_plugin_runs_and_validates(data: DataDir) -> None:
    schema = json.loads(data.cli("schema", "hello").stdout)
    assert schema["properties"]["names"]["minItems"] == 1
    data.drop("h.json", {"type": "hello", "id": "hi", "names": ["Ada", "Grace"]})
    data.drop("bad.json", {"type": "hello", "id": "blank", "names": ["Ada", " "]})
    data.drop("empty.json", {"type": "hello", "id": "none", "names": []})
    out = run_burst(data)
    assert out.returncode == 0, out.stderr
    assert "[hi] greeted Grace" in out.stderr
    doc = data.status("hi")
    assert doc["status"] == "completed" and doc["result"] == {"greeted": 2, "last": "Hello, Grace!"}
    assert doc["progress"]["percentage"] == 100.0
    blank = data.status("blank")
    assert blank["status"] == "failed" and blank["error"]["message"] == "names[1] is blank"
    assert blank["attempt"] == 1  # a PermanentError is not retried
    assert "names: List should have at least 1 item" in data.rejected()["empty.json"]["reason"]
