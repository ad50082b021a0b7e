#!/usr/bin/env python3
"""glad's OpenAI HTTP API with plain `requests` (Debian's python3-requests): a completion, a
streamed chat (Server-Sent Events read line by line), a JSON answer under a JSON Schema
(response_format), and an error in OpenAI's shape. No SDK needed; the official `openai` package
works too (docs/api.md).

    glad --http_listen 127.0.0.1:8000 &
    python3 clients/python/example_http.py --url http://127.0.0.1:8000/v1 [--token TOKEN]
    python3 clients/python/example_http.py --url https://HOST:8443/v1 --cacert cert.pem   # glad with --tls_cert
"""
import argparse
import json
import sys

import requests


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--token", default="", help="glad's --auth_token, if it has one")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--cacert", default="", help="PEM file to trust for an https:// URL (glad's --tls_cert, or its CA)")
    args = ap.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    session = requests.Session()  # one kept-alive connection for every request below
    # Passed with each request: a session's own `verify` loses to REQUESTS_CA_BUNDLE when that is set.
    tls = {"verify": args.cacert} if args.cacert else {}

    model = session.get(f"{args.url}/models", headers=headers, timeout=30, **tls).json()["data"][0]["id"]
    print(f"model: {model}")

    r = session.post(f"{args.url}/completions", headers=headers, timeout=60, **tls,
                     json={"model": model, "prompt": "The jury said", "max_tokens": args.max_tokens, "seed": 1})
    r.raise_for_status()
    done = r.json()
    print(f"completion: {done['choices'][0]['text']!r} ({done['choices'][0]['finish_reason']}, "
          f"{done['usage']['completion_tokens']} tokens)")

    chat = {"model": model, "stream": True, "max_tokens": args.max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": "What did the jury say?"}]}
    pieces = []
    with session.post(f"{args.url}/chat/completions", headers=headers, json=chat, stream=True, timeout=60, **tls) as s:
        s.raise_for_status()
        for line in s.iter_lines(decode_unicode=True):
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                break
            delta = json.loads(data)["choices"][0]["delta"]
            pieces.append(delta.get("content", ""))
    print(f"chat (streamed, {len(pieces)} chunks): {''.join(pieces)!r}")

    # Structured output (docs/structured-output.md): the answer is JSON valid under the schema.
    schema = {"type": "object", "properties": {"verdict": {"enum": ["guilty", "not guilty"]},
                                               "votes": {"type": "integer", "minimum": 0, "maximum": 12}},
              "required": ["verdict", "votes"], "additionalProperties": False}
    r = session.post(f"{args.url}/chat/completions", headers=headers, timeout=60, **tls,
                     json={"model": model, "max_tokens": 60, "seed": 1,
                           "messages": [{"role": "user", "content": "What did the jury say?"}],
                           "response_format": {"type": "json_schema",
                                               "json_schema": {"name": "verdict", "schema": schema, "strict": True}}})
    r.raise_for_status()
    structured = r.json()["choices"][0]
    verdict = json.loads(structured["message"]["content"])  # bounded: always complete within 60 tokens
    print(f"structured: {verdict} ({structured['finish_reason']})")
    if structured["finish_reason"] != "stop" or verdict["verdict"] not in ("guilty", "not guilty") \
            or not 0 <= verdict["votes"] <= 12:
        sys.exit("unexpected structured answer")

    bad = session.post(f"{args.url}/completions", headers=headers, timeout=30, **tls,
                       json={"model": model, "prompt": "x", "temperature": -1})
    err = bad.json()["error"]
    print(f"error: HTTP {bad.status_code} {err['type']}: {err['message']}")
    if bad.status_code != 400 or not pieces or not done["choices"][0]["text"]:
        sys.exit("unexpected answers")


if __name__ == "__main__":
    main()
