"""The floor: a bare Flask 3 endpoint that parses the request body and answers a constant.

No re-serialisation of the body (that would make the floor slower than what any service
must do): it is the cost of HTTP, WSGI, Flask and reading JSON, nothing else.
"""

from __future__ import annotations

from flask import Flask, Response, request

app = Flask("bare")
ANSWER = b'{"cards":[]}'


@app.post("/echo")
def echo() -> Response:
    body = request.get_json()
    return Response(ANSWER if body is not None else b"null", mimetype="application/json")
