"""The baseline: a bare Flask 3 endpoint that parses the request body and echoes it."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

app = Flask("bare")


@app.post("/echo")
def echo() -> Any:
    return jsonify(request.get_json())
