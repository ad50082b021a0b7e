"""A small Python client for glad (gla.v1), for Debian's python3-grpcio.

The protobuf/gRPC stubs are generated from proto/ by the build (build/proto/python); put that
directory on sys.path (or PYTHONPATH) before importing this module, or pass stubs_dir.

    client = GlaClient("127.0.0.1:50051")
    print(client.generate(text="Once upon a time", max_new_tokens=32).text)
    for chunk in client.stream(token_ids=[1, 2, 3], max_new_tokens=16, temperature=0.8, seed=7):
        print(chunk.text, end="", flush=True)
"""

import os
import sys

_DEFAULT_STUBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "proto", "python")


def _import_stubs(stubs_dir):
    path = os.path.abspath(stubs_dir or os.environ.get("GLA_PY_STUBS", _DEFAULT_STUBS))
    if path not in sys.path:
        sys.path.insert(0, path)
    from gla.v1 import gla_pb2, gla_pb2_grpc  # noqa: E402  (generated)
    return gla_pb2, gla_pb2_grpc


class GlaClient:
    """Thin wrapper over the generated stub: keyword arguments instead of nested messages."""

    SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                       "presence_penalty", "frequency_penalty", "seed")

    def __init__(self, address, timeout_s=60.0, stubs_dir=None):
        import grpc
        self.pb, pb_grpc = _import_stubs(stubs_dir)
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.GlaStub(self.channel)
        self.timeout_s = timeout_s

    def _request(self, text=None, token_ids=None, max_new_tokens=0, stop=(), stop_token_ids=(),
                 ignore_eos=False, logprobs=None, request_id="", **sampling):
        unknown = set(sampling) - set(self.SAMPLING_FIELDS)
        if unknown:
            raise TypeError("unknown sampling option(s): " + ", ".join(sorted(unknown)))
        if (text is None) == (token_ids is None):
            raise ValueError("give exactly one of text= or token_ids=")
        req = self.pb.GenerateRequest(max_new_tokens=max_new_tokens, stop=list(stop),
                                      stop_token_ids=list(stop_token_ids), ignore_eos=ignore_eos,
                                      request_id=request_id)
        if text is not None:
            req.text = text.encode("utf-8")  # bytes on the wire: the server validates UTF-8
        else:
            req.token_ids.ids.extend(token_ids)
        if logprobs is not None:
            req.logprobs = logprobs
        for key, value in sampling.items():
            setattr(req.sampling, key, value)
        return req

    def generate(self, **kwargs):
        """Returns the GenerateResponse (token_ids, text, finish_reason, usage, logprobs)."""
        return self.stub.Generate(self._request(**kwargs), timeout=self.timeout_s)

    def stream(self, **kwargs):
        """Yields GenerateStreamResponse messages; the last carries finish_reason and usage."""
        return self.stub.GenerateStream(self._request(**kwargs), timeout=self.timeout_s)

    def tokenize(self, text, add_bos=True):
        return list(self.stub.Tokenize(self.pb.TokenizeRequest(text=text.encode("utf-8"), add_bos=add_bos),
                                       timeout=self.timeout_s).token_ids)

    def detokenize(self, token_ids):
        return self.stub.Detokenize(self.pb.DetokenizeRequest(token_ids=list(token_ids)), timeout=self.timeout_s).text

    def info(self):
        return self.stub.ModelInfo(self.pb.ModelInfoRequest(), timeout=self.timeout_s)

    def finish_reason_name(self, value):
        return self.pb.FinishReason.Name(value)
