"""A small Python client for glad (gla.v1), for Debian's python3-grpcio.

Installed (`pip install clients/python`; offline: `--no-build-isolation`), the gla.v1 stubs
come with it, generated from proto/ when the package is built. From the source tree, the stubs
are the CMake build's (build/proto/python), or those in stubs_dir or $GLA_PY_STUBS.

    client = GlaClient("127.0.0.1:50051")
    print(client.generate(text="Once upon a time", max_new_tokens=32).text)
    for chunk in client.stream(token_ids=[1, 2, 3], max_new_tokens=16, temperature=0.8, seed=7):
        print(chunk.text, end="", flush=True)

Fine-tuning (glad started with --adapter_dir):

    job = client.fine_tune("mine", texts=["one document", "another"], max_steps=50, rank=8)
    for event in client.watch_job(job.id):
        print(event.step, event.loss)
    client.generate(text="Once upon", adapter="mine")

Structured output (a model with a tokenizer; docs/structured-output.md): constraint= takes one of
{"json_schema": dict or JSON text}, {"regex": pattern}, {"grammar": GBNF text}, {"json_object": True}:

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    json.loads(client.generate(text="Answer:", max_new_tokens=40, constraint={"json_schema": schema}).text)

A server started with --tls_cert/--auth_token: GlaClient(address, tls_ca="ca.pem", token="...")
(the token defaults to $GLA_TOKEN; tls_ca=True uses the system's roots).

Several replicas (a headless Service's endpoints): GlaClient("10.0.0.1:50051,10.0.0.2:50051,...")
or GlaClient("dns:///glad-headless.default.svc:50051") (every address the name resolves to, looked
up again every refresh_s seconds, 30 by default, so that pods the autoscaler adds or replaces are
used and removed ones are not; refresh_replicas() does it now; a failed lookup keeps the last
list) sends a call about a session to the replica pick_replica() chooses for it (the same
one gla-cli and every other client choose), any other generation to a random one; the other calls
go to the first replica in sorted order.
"""

import os
import sys

def expand_replicas(address):
    """The replicas an address string names: comma-separated HOST:PORT entries as given, and each
    dns:///NAME:PORT resolved to every address of NAME (a headless Service's ready pods) as IP:PORT
    ([IPv6]:PORT); duplicates removed, sorted -- the same list gla-cli makes (ExpandReplicas)."""
    import socket
    out = set()
    for a in (x.strip() for x in address.split(",")):
        if not a:
            continue
        if not a.startswith("dns:///"):
            out.add(a)
            continue
        name, sep, port = a[len("dns:///"):].rpartition(":")
        if not sep or not name or not port:
            raise ValueError(f"{a}: expected dns:///NAME:PORT")
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        for family, _, _, _, sockaddr in infos:
            if family == socket.AF_INET6:
                out.add(f"[{sockaddr[0]}]:{port}")
            elif family == socket.AF_INET:
                out.add(f"{sockaddr[0]}:{port}")
        if not infos:
            raise ValueError(f"{a}: {name} has no address")
    return sorted(out)


def pick_replica(replicas, session):
    """The replica for a session by rendezvous hashing: the highest FNV-1a 64 of "SESSION\\nREPLICA",
    mixed by MurmurHash3's finalizer (the same function as gla-cli's PickReplica,
    clients/common/connection.h); a random one without a session."""
    if len(replicas) == 1:
        return replicas[0]
    if not session:
        import random
        return random.choice(replicas)

    def fnv(text):  # FNV-1a 64 through MurmurHash3's finalizer
        m = 0xFFFFFFFFFFFFFFFF
        h = 1469598103934665603
        for b in text.encode("utf-8"):
            h = ((h ^ b) * 1099511628211) & m
        h ^= h >> 33
        h = (h * 0xff51afd7ed558ccd) & m
        h ^= h >> 33
        h = (h * 0xc4ceb9fe1a85ec53) & m
        return h ^ (h >> 33)

    best, best_score = None, 0
    for r in replicas:
        score = fnv(session + "\n" + r)
        if best is None or score > best_score:
            best, best_score = r, score
    return best


_DEFAULT_STUBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "proto", "python")


def _bearer_interceptor(grpc, token):
    """Adds 'authorization: Bearer <token>' to every call (unary and streaming)."""
    import collections

    class _Details(collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials",
                                                        "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
        pass

    class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        def _with_token(self, d):
            metadata = list(d.metadata or []) + [("authorization", "Bearer " + token)]
            return _Details(d.method, d.timeout, metadata, d.credentials, getattr(d, "wait_for_ready", None),
                            getattr(d, "compression", None))

        def intercept_unary_unary(self, continuation, details, request):
            return continuation(self._with_token(details), request)

        def intercept_unary_stream(self, continuation, details, request):
            return continuation(self._with_token(details), request)

    return _Bearer()


def _import_stubs(stubs_dir):
    """gla.v1 from stubs_dir or $GLA_PY_STUBS when given, else the installed package's, else the build's."""
    explicit = stubs_dir or os.environ.get("GLA_PY_STUBS")
    if not explicit:
        try:
            from gla.v1 import gla_pb2, gla_pb2_grpc  # installed with this package
            return gla_pb2, gla_pb2_grpc
        except ImportError:
            pass
    path = os.path.abspath(explicit or _DEFAULT_STUBS)
    if path not in sys.path:
        sys.path.insert(0, path)
    from gla.v1 import gla_pb2, gla_pb2_grpc  # noqa: E402  (generated)
    return gla_pb2, gla_pb2_grpc


class GlaClient:
    """Thin wrapper over the generated stub: keyword arguments instead of nested messages."""

    SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                       "presence_penalty", "frequency_penalty", "seed")

    def __init__(self, address, timeout_s=60.0, stubs_dir=None, token=None, tls_ca=None, refresh_s=30.0):
        import threading
        import time
        self.pb, self._pb_grpc = _import_stubs(stubs_dir)
        self._address = address
        self._token = token if token is not None else os.environ.get("GLA_TOKEN")
        self._tls_ca = tls_ca
        # Only a dns:/// entry can change; a list of HOST:PORT is what it is.
        self._refresh_s = refresh_s if "dns:///" in address else None
        self._lock = threading.Lock()
        self._clock = time.monotonic
        self._channels = {}  # replica -> (channel, Gla stub)
        self.timeout_s = timeout_s
        self._use(expand_replicas(address))
        self._resolved_at = self._clock()

    def _connect(self, replica):
        import grpc
        if self._tls_ca:
            roots = None
            if self._tls_ca is not True:
                with open(self._tls_ca, "rb") as f:
                    roots = f.read()
            channel = grpc.secure_channel(replica, grpc.ssl_channel_credentials(roots))
        else:
            channel = grpc.insecure_channel(replica)
        if self._token:
            channel = grpc.intercept_channel(channel, _bearer_interceptor(grpc, self._token))
        return channel, self._pb_grpc.GlaStub(channel)

    def _use(self, replicas):
        """Serve from `replicas` (sorted): a channel each, kept for replicas already known; the
        first one takes the calls about no session (stub, channel, fine_tune_stub)."""
        if not replicas:
            raise ValueError("no address")
        channels = {r: self._channels.get(r) or self._connect(r) for r in replicas}
        # A replica that went away: its channel is dropped, not closed (a call on it may still run).
        self._channels = channels
        self.replicas = list(replicas)
        self.channel, self.stub = channels[self.replicas[0]]
        self.fine_tune_stub = self._pb_grpc.FineTuneStub(self.channel)

    def refresh_replicas(self):
        """Looks the dns:/// names up again now; True when the replica list changed. A failed lookup
        (or one with no address) keeps the list it had: the replicas it knows may still serve."""
        try:
            found = expand_replicas(self._address)
        except (OSError, ValueError):
            found = []
        with self._lock:
            self._resolved_at = self._clock()
            if not found or found == self.replicas:
                return False
            self._use(found)
            return True

    def _maybe_refresh(self):
        if self._refresh_s is not None and self._clock() - self._resolved_at >= self._refresh_s:
            self.refresh_replicas()

    CONSTRAINT_KINDS = ("json_schema", "regex", "grammar", "json_object")

    def _request(self, text=None, token_ids=None, max_new_tokens=0, stop=(), stop_token_ids=(),
                 ignore_eos=False, logprobs=None, request_id="", adapter="", session="", constraint=None,
                 **sampling):
        unknown = set(sampling) - set(self.SAMPLING_FIELDS)
        if unknown:
            raise TypeError("unknown sampling option(s): " + ", ".join(sorted(unknown)))
        if (text is None) == (token_ids is None):
            raise ValueError("give exactly one of text= or token_ids=")
        if constraint is not None and (not isinstance(constraint, dict) or len(constraint) != 1
                                       or next(iter(constraint)) not in self.CONSTRAINT_KINDS):
            raise ValueError("constraint= is one of {'json_schema': SCHEMA}, {'regex': PATTERN}, "
                             "{'grammar': GBNF}, {'json_object': True}")
        req = self.pb.GenerateRequest(max_new_tokens=max_new_tokens, stop=list(stop),
                                      stop_token_ids=list(stop_token_ids), ignore_eos=ignore_eos,
                                      request_id=request_id, adapter=adapter, session=session)
        if text is not None:
            req.text = text.encode("utf-8")  # bytes on the wire: the server validates UTF-8
        else:
            req.token_ids.ids.extend(token_ids)
        if logprobs is not None:
            req.logprobs = logprobs
        for key, value in sampling.items():
            setattr(req.sampling, key, value)
        if constraint is not None:
            (kind, value), = constraint.items()
            if kind == "json_schema" and not isinstance(value, str):
                import json
                value = json.dumps(value)  # a dict: sent as JSON text, its members in order
            setattr(req, kind, value)
        return req

    # The header naming the session a call is about: a proxy in front of replicas
    # (deploy/nginx/gla.conf) sends every call about one session to the same replica.
    SESSION_HEADER = "x-gla-session"

    def _affinity(self, session):
        return [(self.SESSION_HEADER, session)] if session else None

    def _stub(self, session):
        """The replica's stub for a call about `session` (a random replica's without one)."""
        self._maybe_refresh()
        with self._lock:
            return self._channels[pick_replica(self.replicas, session)][1]

    def generate(self, **kwargs):
        """Returns the GenerateResponse (token_ids, text, finish_reason, usage, logprobs)."""
        session = kwargs.get("session")
        return self._stub(session).Generate(self._request(**kwargs), timeout=self.timeout_s,
                                            metadata=self._affinity(session))

    def stream(self, **kwargs):
        """Yields GenerateStreamResponse messages; the last carries finish_reason and usage."""
        session = kwargs.get("session")
        return self._stub(session).GenerateStream(self._request(**kwargs), timeout=self.timeout_s,
                                                  metadata=self._affinity(session))

    def tokenize(self, text, add_bos=True):
        return list(self.stub.Tokenize(self.pb.TokenizeRequest(text=text.encode("utf-8"), add_bos=add_bos),
                                       timeout=self.timeout_s).token_ids)

    def detokenize(self, token_ids):
        return self.stub.Detokenize(self.pb.DetokenizeRequest(token_ids=list(token_ids)), timeout=self.timeout_s).text

    def info(self):
        return self.stub.ModelInfo(self.pb.ModelInfoRequest(), timeout=self.timeout_s)

    def finish_reason_name(self, value):
        return self.pb.FinishReason.Name(value)

    # ---- Sessions: generate(session=ID, ...) continues one; each turn sends only its new prompt.

    def create_session(self, session_id="", ttl_s=None):
        """Returns the Session (session_id is the server's choice when empty)."""
        req = self.pb.CreateSessionRequest(session_id=session_id)
        if ttl_s is not None:
            req.ttl_s = ttl_s
        return self._stub(session_id).CreateSession(req, timeout=self.timeout_s, metadata=self._affinity(session_id))

    def fork_session(self, source_session_id, session_id="", ttl_s=None):
        req = self.pb.ForkSessionRequest(source_session_id=source_session_id, session_id=session_id)
        if ttl_s is not None:
            req.ttl_s = ttl_s
        return self._stub(source_session_id).ForkSession(req, timeout=self.timeout_s,
                                                         metadata=self._affinity(source_session_id))

    def delete_session(self, session_id):
        self._stub(session_id).DeleteSession(self.pb.DeleteSessionRequest(session_id=session_id),
                                             timeout=self.timeout_s, metadata=self._affinity(session_id))

    def list_sessions(self):
        return list(self.stub.ListSessions(self.pb.ListSessionsRequest(), timeout=self.timeout_s).sessions)

    # ---- Fine-tuning (gla.v1.FineTune)

    HYPERPARAMETERS = ("rank", "alpha", "dropout", "target_modules", "max_steps", "batch_sequences",
                       "sequence_length", "learning_rate", "min_lr_ratio", "warmup_steps", "weight_decay",
                       "max_grad_norm", "seed")

    def fine_tune(self, adapter_name, token_sequences=None, texts=None, data_file=None, method="lora",
                  **hyperparameters):
        """Queues a job; returns the FineTuneJob. Give one of token_sequences= (lists of ids),
        texts= (strings) or data_file= (a path inside the server's --finetune_data_dir)."""
        unknown = set(hyperparameters) - set(self.HYPERPARAMETERS)
        if unknown:
            raise TypeError("unknown hyper-parameter(s): " + ", ".join(sorted(unknown)))
        if sum(x is not None for x in (token_sequences, texts, data_file)) != 1:
            raise ValueError("give exactly one of token_sequences=, texts=, data_file=")
        methods = {"lora": self.pb.FINE_TUNE_METHOD_LORA, "full": self.pb.FINE_TUNE_METHOD_FULL}
        if method not in methods:
            raise ValueError("method: lora or full")
        req = self.pb.CreateFineTuneJobRequest(adapter_name=adapter_name, method=methods[method])
        for key, value in hyperparameters.items():
            if key == "target_modules":
                req.hyperparameters.target_modules.extend(value)
            else:
                setattr(req.hyperparameters, key, value)
        if token_sequences is not None:
            for ids in token_sequences:
                req.token_sequences.sequences.add().ids.extend(ids)
        elif texts is not None:
            req.texts.texts.extend(t.encode("utf-8") for t in texts)
        else:
            req.data_file = data_file
        return self.fine_tune_stub.CreateFineTuneJob(req, timeout=self.timeout_s)

    def watch_job(self, job_id, timeout_s=None):
        """Yields FineTuneProgress events until the job ends (the last one has a final state)."""
        return self.fine_tune_stub.WatchFineTuneJob(self.pb.WatchFineTuneJobRequest(job_id=job_id), timeout=timeout_s)

    def get_job(self, job_id):
        return self.fine_tune_stub.GetFineTuneJob(self.pb.GetFineTuneJobRequest(job_id=job_id), timeout=self.timeout_s)

    def list_jobs(self):
        return list(self.fine_tune_stub.ListFineTuneJobs(self.pb.ListFineTuneJobsRequest(), timeout=self.timeout_s).jobs)

    def cancel_job(self, job_id):
        return self.fine_tune_stub.CancelFineTuneJob(self.pb.CancelFineTuneJobRequest(job_id=job_id),
                                                     timeout=self.timeout_s)

    def list_adapters(self):
        return list(self.fine_tune_stub.ListAdapters(self.pb.ListAdaptersRequest(), timeout=self.timeout_s).adapters)

    def load_adapter(self, name, path, replace=False):
        """Loads a PEFT directory from inside the server's --adapter_dir; returns the Adapter."""
        return self.fine_tune_stub.LoadAdapter(self.pb.LoadAdapterRequest(name=name, path=path, replace=replace),
                                               timeout=self.timeout_s)

    def unload_adapter(self, name):
        self.fine_tune_stub.UnloadAdapter(self.pb.UnloadAdapterRequest(name=name), timeout=self.timeout_s)

    def job_state_name(self, value):
        return self.pb.FineTuneJobState.Name(value)
