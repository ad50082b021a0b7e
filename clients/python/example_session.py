#!/usr/bin/python3
"""Example: a conversation through a session, a branch of it, and the check that a session turn
generates what one request holding the whole conversation would.

    /usr/bin/python3 clients/python/example_session.py --addr 127.0.0.1:50051
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gla_client import GlaClient  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", default="127.0.0.1:50051")
    args = parser.parse_args()
    client = GlaClient(args.addr)

    session = client.create_session().session_id
    turns = [[1, 17, 42, 99, 7], [23, 5, 88], [61, 62, 63, 64]]
    history = []
    for i, prompt in enumerate(turns):
        resp = client.generate(token_ids=prompt, max_new_tokens=6, ignore_eos=True, session=session)
        print(f"turn {i + 1}: sent {len(prompt)} tokens (the session held {resp.usage.session_tokens}), "
              f"got {list(resp.token_ids)}")
        last = list(resp.token_ids)
        if i + 1 < len(turns):
            history += prompt + last
    whole = client.generate(token_ids=history + turns[-1], max_new_tokens=6, ignore_eos=True)
    print(f"one request with all {len(history) + len(turns[-1])} tokens: {list(whole.token_ids)}")
    if list(whole.token_ids) != last:
        print("error: the session's last turn differs from the whole-conversation request", file=sys.stderr)
        return 1

    branch = client.fork_session(session).session_id
    a = client.generate(token_ids=[9, 9], max_new_tokens=4, ignore_eos=True, session=session)
    b = client.generate(token_ids=[9, 9], max_new_tokens=4, ignore_eos=True, session=branch)
    print("fork continues alike:", list(a.token_ids) == list(b.token_ids))
    print("sessions:", ", ".join(f"{s.session_id} ({s.tokens} tokens, {s.location})" for s in client.list_sessions()))
    for s in (session, branch):
        client.delete_session(s)
    return 0 if list(a.token_ids) == list(b.token_ids) else 1


if __name__ == "__main__":
    sys.exit(main())
