#!/usr/bin/python3
"""Example: model info, one unary request, one streamed request, a constrained one against a running glad.

    /usr/bin/python3 clients/python/example.py --addr 127.0.0.1:50051
"""

import argparse
import os
import re
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gla_client import GlaClient  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", default="127.0.0.1:50051")
    parser.add_argument("--prompt", help="text prompt (needs a model with tokenizer.model)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()

    client = GlaClient(args.addr)
    info = client.info()
    print(f"model: {info.model_dir} backend={info.backend} slots={info.slots} vocab={info.config.vocab_size}")
    prompt = {"text": args.prompt} if args.prompt else {"token_ids": [1, 17, 42, 99, 7]}

    resp = client.generate(max_new_tokens=args.max_new_tokens, ignore_eos=True, **prompt)
    print("unary ids:", list(resp.token_ids), "finish:", client.finish_reason_name(resp.finish_reason))
    if resp.text:
        print("unary text:", resp.text)

    streamed = []
    for msg in client.stream(max_new_tokens=args.max_new_tokens, ignore_eos=True, **prompt):
        streamed.extend(msg.token_ids)
        if msg.finish_reason:
            print(f"stream finish: {client.finish_reason_name(msg.finish_reason)} "
                  f"ttft={msg.usage.time_to_first_token_s:.4f}s total={msg.usage.total_time_s:.4f}s")
    print("stream ids:", streamed)
    if streamed != list(resp.token_ids):
        print("error: greedy stream differs from unary", file=sys.stderr)
        return 1
    seeded = [client.generate(max_new_tokens=8, temperature=0.9, seed=5, **prompt).token_ids for _ in range(2)]
    print("seeded twice equal:", list(seeded[0]) == list(seeded[1]))
    if list(seeded[0]) != list(seeded[1]):
        return 1

    # Structured output: the whole text matches the pattern. It follows the text, so a model without
    # a tokenizer refuses it (INVALID_ARGUMENT naming the field).
    try:
        c = client.generate(max_new_tokens=16, temperature=0.9, seed=5, constraint={"regex": "[0-9]{3}-[0-9]{4}"},
                            **prompt)
        print("constrained:", repr(c.text), client.finish_reason_name(c.finish_reason))
        return 0 if re.fullmatch("[0-9]{3}-[0-9]{4}", c.text) else 1
    except grpc.RpcError as e:
        print("constrained: refused:", e.code().name, e.details())
        return 0 if e.code() == grpc.StatusCode.INVALID_ARGUMENT and "regex" in e.details() else 1


if __name__ == "__main__":
    sys.exit(main())
