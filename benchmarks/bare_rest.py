"""The floor for V2 REST in Python: a bare FastAPI route on uvicorn that parses the same V2 JSON and echoes it.

`python -m benchmarks.bare_rest --port PORT` serves `POST /v2/models/{name}/infer` and `GET /v2/health/ready`
on 127.0.0.1. No framework around it: no validation against a model's declaration, no batching, no hand-off
to a model thread, no middleware. It runs on the same event loop (asyncio's) and HTTP parser (httptools)
as this server's HTTP port, with uvicorn's access log off (this server logs no access line at INFO either),
so that the two differ only by what this server does per request.
"""

import argparse
import json

import uvicorn
from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.get("/v2/health/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> Response:
    document = json.loads(await request.body())
    tensor = document["inputs"][0]
    answer = {
        "model_name": name,
        "model_version": "",
        "outputs": [{"name": "output.bin", "datatype": "BYTES", "shape": tensor["shape"], "data": tensor["data"]}],
    }
    return Response(json.dumps(answer, ensure_ascii=False).encode(), media_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(app, host="127.0.0.1", port=port, loop="asyncio", http="httptools", access_log=False)


if __name__ == "__main__":
    main()
