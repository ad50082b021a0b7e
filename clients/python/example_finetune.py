#!/usr/bin/python3
"""Example: a LoRA fine-tune through glad (started with --adapter_dir), watched to its end, then
generation with the new adapter, the same files loaded under another name, and unloaded.

    /usr/bin/python3 clients/python/example_finetune.py --addr 127.0.0.1:50051
"""

import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gla_client import GlaClient  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", default="127.0.0.1:50051")
    parser.add_argument("--name", default="example-lora")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()

    client = GlaClient(args.addr)
    vocab = client.info().config.vocab_size
    docs = [[(7 * i + 3 * d) % min(vocab, 40) + 1 for i in range(50)] for d in range(6)]  # repetitive: learnable
    job = client.fine_tune(args.name, token_sequences=docs, max_steps=args.steps, rank=4, batch_sequences=2,
                           sequence_length=24, learning_rate=1e-2)
    print(f"job {job.id}: {client.job_state_name(job.state)}")
    last = None
    for event in client.watch_job(job.id, timeout_s=300):
        last = event
        if event.step:
            print(f"  step {event.step}/{event.total_steps} loss {event.loss:.4f} lr {event.learning_rate:.2e}")
    final = client.job_state_name(last.state)
    print(f"job {job.id}: {final}")
    if final != "FINE_TUNE_JOB_STATE_SUCCEEDED":
        print("error:", client.get_job(job.id).error, file=sys.stderr)
        return 1

    if job.id not in [j.id for j in client.list_jobs()]:
        print("error: the job is not in the list", file=sys.stderr)
        return 1
    names = [a.name for a in client.list_adapters()]
    print("adapters:", names)
    tuned = client.generate(token_ids=docs[0][:10], max_new_tokens=8, adapter=args.name)
    print("with the adapter:", list(tuned.token_ids))

    copy = client.load_adapter(args.name + "-copy", args.name)  # the job's directory, by its path in --adapter_dir
    print(f"loaded {copy.name} (rank {copy.rank}, source {copy.source})")
    again = client.generate(token_ids=docs[0][:10], max_new_tokens=8, adapter=copy.name)
    client.unload_adapter(copy.name)
    try:
        client.generate(token_ids=docs[0][:10], max_new_tokens=8, adapter=copy.name)
        print("error: an unloaded adapter still answers", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print("after unload:", e.code().name)
    if list(again.token_ids) != list(tuned.token_ids):
        print("error: the same adapter files gave different greedy tokens", file=sys.stderr)
        return 1
    return 0 if args.name in names else 1


if __name__ == "__main__":
    sys.exit(main())
