#!/usr/bin/python3
"""Soak test: mixed traffic against one glad for a while, watching its memory, fds and threads.

    /usr/bin/python3 tests/soak/soak.py --build-dir build --minutes 60 --out /tmp/soak-XXXX
    deploy/soak.sh [--minutes N] [--build-dir DIR]      # the same, with a fresh temp folder

It builds nothing: it expects a build (BUILD/server/glad with its SentencePiece shim beside it, and
the Python stubs the build generates in BUILD/proto/python). It starts glad on the CPU backend with
the default model and --session_dir, --adapter_dir, --finetune_data_dir and --metrics_listen in the
output folder, then runs these clients at once until the time is up:

  stream    GenerateStream, text prompts, sampled (seeded) or greedy, 24-48 tokens
  unary     Generate (text or token ids), and now and then a prompt of 130+ random tokens (the
            prefix-state cache's counting) or a shared 3-block "system prompt" (its hits); every
            20th call repeats one greedy request and checks that the tokens never change
  cancel    GenerateStream of 200 tokens cancelled by the client after 2-5 messages (CANCELLED)
  deadline  Generate / GenerateStream of 200 tokens with a 50-300 ms deadline (DEADLINE_EXCEEDED
            on the client; glad's own log says which code it ended with: reported)
  session   CreateSession, 3-4 turns (unary and streamed), ForkSession + a turn on the branch, a
            deliberate second turn while a streamed turn runs (FAILED_PRECONDITION), that turn
            cancelled (the session's tokens must not change), ListSessions, DeleteSession x2;
            two sessions with no TTL are kept to the end (written to --session_dir on SIGTERM)
  misc      ModelInfo, Tokenize, Detokenize, ListSessions, ListAdapters, ListFineTuneJobs,
            grpc.health.v1 Check; a GET /metrics every 30 s
  finetune  every --finetune-every-s: a small LoRA job (rank 4, 6 steps, 2 x 32 tokens; data
            inline texts and a data_file in turn) watched to SUCCEEDED, its adapter generated
            with, loaded again under a second name (LoadAdapter), generated with, both unloaded
            (NOT_FOUND after); every third cycle also a long job cancelled while it runs

glad's VmRSS, open fds and threads are sampled every --sample-s into samples.tsv. At the end the
clients stop, an idle sample is taken, glad gets SIGTERM with one stream in flight (it must
finish: the drain), and the exit status, the draining / stopped log lines and the session files
are checked. summary.txt: requests by method and code, unexpected errors, the resource
trend (linear fit over the second half of the run) and a verdict. Exit status 0 only when there
were no unexpected errors, the trend is flat and glad shut down cleanly.
"""

import argparse
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

# Codes a deliberate case may end with besides OK (which is always expected).
EXPECTED = {
    "cancel": {"CANCELLED"},
    "deadline": {"DEADLINE_EXCEEDED", "CANCELLED"},
    "busy": {"FAILED_PRECONDITION"},
    "after-unload": {"NOT_FOUND"},
}

CODE_NAMES = {0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
              6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
              10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
              15: "DATA_LOSS", 16: "UNAUTHENTICATED"}


class Tally:
    """Every RPC outcome by (method label, code), plus the unexpected ones with their details."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.unexpected = []
        self.checks = collections.Counter()  # name -> failures of a correctness check

    def add(self, label, code, expected=(), detail=""):
        with self.lock:
            self.counts[(label, code)] += 1
            if code != "OK" and code not in expected:
                self.unexpected.append((time.time(), label, code, detail[:300]))

    def fail_check(self, name, detail):
        with self.lock:
            self.checks[name] += 1
            self.unexpected.append((time.time(), "check:" + name, "MISMATCH", detail[:300]))

    def total(self):
        with self.lock:
            return sum(self.counts.values()), len(self.unexpected)


def proc_sample(pid):
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    return {"rss_kib": int(status["VmRSS"].split()[0]), "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def linear_slope(xs, ys):
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


class Soak:
    def __init__(self, args, grpc, pb, pb_grpc):
        self.args, self.grpc, self.pb = args, grpc, pb
        self.tally = Tally()
        self.stop = threading.Event()
        self.rng_lock = threading.Lock()
        self.channel = grpc.insecure_channel(args.addr)
        self.gla = pb_grpc.GlaStub(self.channel)
        self.ft = pb_grpc.FineTuneStub(self.channel)
        self.health = self.channel.unary_unary("/grpc.health.v1.Health/Check",
                                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with open(os.path.join(REPO, "models", "gla-brown", "heldout_sample.txt"), encoding="utf-8") as f:
            text = f.read()
        self.sentences = [s.strip() + "." for s in re.split(r"\.\s", text) if len(s.split()) >= 4]
        self.words = text.split()
        self.system_prompt = " ".join(self.words[:120])  # > 2 blocks of 64 tokens: a cacheable prefix
        self.vocab = None
        self.seq = 0

    # ---- helpers

    def next_id(self, kind):
        with self.rng_lock:
            self.seq += 1
            return f"soak-{kind}-{self.seq}"

    def code_of(self, e):
        return e.code().name if isinstance(e, self.grpc.RpcError) else "CLIENT_ERROR:" + type(e).__name__

    def req(self, kind, text=None, ids=None, max_new=32, session="", adapter="", ignore_eos=False, sample=None,
            request_id=None):
        r = self.pb.GenerateRequest(max_new_tokens=max_new, request_id=request_id or self.next_id(kind),
                                    session=session,
                                    adapter=adapter, ignore_eos=ignore_eos)
        if text is not None:
            r.text = text.encode("utf-8")
        else:
            r.token_ids.ids.extend(ids)
        if sample is not None:
            r.sampling.temperature = 0.8
            r.sampling.top_p = 0.95
            r.sampling.seed = sample
        return r

    def call(self, label, fn, expected=(), timeout=None):
        """Runs one unary RPC, counts its outcome; returns the response or None."""
        try:
            resp = fn(timeout=timeout or self.args.rpc_timeout_s)
            self.tally.add(label, "OK")
            return resp
        except Exception as e:  # noqa: BLE001 - every outcome is counted
            self.tally.add(label, self.code_of(e), expected, str(getattr(e, "details", lambda: e)()))
            return None

    def stream(self, label, request, expected=(), timeout=None, cancel_after=None):
        """Reads a GenerateStream to its end (or cancels it after cancel_after messages); counts it.
        Returns the token ids, or None when it did not end OK."""
        call = self.gla.GenerateStream(request, timeout=timeout or self.args.rpc_timeout_s)
        ids, n = [], 0
        try:
            for msg in call:
                ids.extend(msg.token_ids)
                n += 1
                if cancel_after is not None and n >= cancel_after:
                    call.cancel()
            if cancel_after is not None and n >= cancel_after:
                # Finished before the cancel took: that is an OK stream, not a failure.
                pass
            self.tally.add(label, "OK")
            return ids
        except Exception as e:  # noqa: BLE001
            self.tally.add(label, self.code_of(e), expected, str(getattr(e, "details", lambda: e)()))
            return None

    def pause(self, lo, hi):
        self.stop.wait(random.uniform(lo, hi))

    def prompt(self):
        return random.choice(self.sentences)[:300]

    # ---- workers

    def w_stream(self):
        while not self.stop.is_set():
            sample = random.randrange(1 << 30) if random.random() < 0.7 else None
            self.stream("GenerateStream", self.req("stream", text=self.prompt(), max_new=random.randint(24, 48),
                                                   sample=sample))
            self.pause(0.3, 1.2)

    def w_unary(self):
        reference, i = None, 0
        while not self.stop.is_set():
            i += 1
            if i % 20 == 1:
                r = self.call("Generate", lambda timeout: self.gla.Generate(
                    self.req("check", text="The jury said", max_new=24, ignore_eos=True), timeout=timeout))
                if r is not None:
                    ids = list(r.token_ids)
                    if reference is None:
                        reference = ids
                    elif ids != reference:
                        self.tally.fail_check("greedy-repeat", f"{ids} != {reference}")
            elif i % 7 == 0:
                ids = [random.randrange(4, self.vocab) for _ in range(random.randint(130, 200))]
                self.call("Generate", lambda timeout: self.gla.Generate(
                    self.req("long", ids=ids, max_new=8), timeout=timeout))
            elif i % 5 == 0:
                self.call("Generate", lambda timeout: self.gla.Generate(
                    self.req("sys", text=self.system_prompt + " " + self.prompt(), max_new=12), timeout=timeout))
            else:
                self.call("Generate", lambda timeout: self.gla.Generate(
                    self.req("unary", text=self.prompt(), max_new=random.randint(16, 32),
                             sample=random.randrange(1 << 30)), timeout=timeout))
            self.pause(0.3, 1.2)

    def w_cancel(self):
        while not self.stop.is_set():
            self.stream("GenerateStream[cancel]", self.req("cancel", text=self.prompt(), max_new=200, ignore_eos=True),
                        EXPECTED["cancel"], cancel_after=random.randint(2, 5))
            self.pause(1.0, 2.5)

    def w_deadline(self):
        while not self.stop.is_set():
            t = random.uniform(0.05, 0.3)
            rid = f"{self.next_id('deadline')}-t{int(t * 1000)}"  # the deadline in ms, for the log
            if random.random() < 0.5:
                self.call("Generate[deadline]", lambda timeout: self.gla.Generate(
                    self.req("deadline", text=self.prompt(), max_new=200, ignore_eos=True, request_id=rid),
                    timeout=timeout), EXPECTED["deadline"], timeout=t)
            else:
                self.stream("GenerateStream[deadline]", self.req("deadline", text=self.prompt(), max_new=200,
                                                                 ignore_eos=True, request_id=rid),
                            EXPECTED["deadline"], timeout=t)
            self.pause(1.0, 2.5)

    def session_tokens(self, sid):
        r = self.call("ListSessions", lambda timeout: self.gla.ListSessions(self.pb.ListSessionsRequest(),
                                                                            timeout=timeout))
        if r is None:
            return None
        for s in r.sessions:
            if s.session_id == sid:
                return s.tokens
        return None

    def turn(self, sid, adapter=""):
        if random.random() < 0.5:
            return self.call("Generate[session]", lambda timeout: self.gla.Generate(
                self.req("turn", text=" " + self.prompt(), max_new=random.randint(8, 20), session=sid,
                         adapter=adapter), timeout=timeout)) is not None
        return self.stream("GenerateStream[session]", self.req("turn", text=" " + self.prompt(),
                                                                 max_new=random.randint(8, 20), session=sid,
                                                                 adapter=adapter)) is not None

    def w_session(self):
        # Two long-lived sessions (no TTL) that the shutdown must write to --session_dir.
        for k in range(2):
            sid = f"soak-keep-{k}"
            self.call("CreateSession", lambda timeout: self.gla.CreateSession(
                self.pb.CreateSessionRequest(session_id=sid, ttl_s=0), timeout=timeout))
            self.turn(sid)
        n = 0
        while not self.stop.is_set():
            n += 1
            s = self.call("CreateSession", lambda timeout: self.gla.CreateSession(
                self.pb.CreateSessionRequest(ttl_s=600), timeout=timeout))
            if s is None:
                self.pause(1, 2)
                continue
            sid = s.session_id
            for _ in range(random.randint(3, 4)):
                if self.stop.is_set():
                    break
                self.turn(sid)
                self.pause(0.1, 0.5)
            f = self.call("ForkSession", lambda timeout: self.gla.ForkSession(
                self.pb.ForkSessionRequest(source_session_id=sid), timeout=timeout))
            if f is not None:
                self.turn(f.session_id)
            # A deliberate second turn while a streamed one runs, then that turn cancelled: the
            # session must hold what it held before.
            before = self.session_tokens(sid)
            call = self.gla.GenerateStream(self.req("busy", text=" " + self.prompt(), max_new=200, ignore_eos=True,
                                                    session=sid), timeout=self.args.rpc_timeout_s)
            try:
                next(iter(call))  # the turn is running
                self.call("Generate[session-busy]", lambda timeout: self.gla.Generate(
                    self.req("busy2", text=" x", max_new=4, session=sid), timeout=timeout), EXPECTED["busy"])
                call.cancel()
                for _ in call:
                    pass
                self.tally.add("GenerateStream[session-cancel]", "OK")
            except Exception as e:  # noqa: BLE001
                self.tally.add("GenerateStream[session-cancel]", self.code_of(e), EXPECTED["cancel"], str(e)[:200])
            time.sleep(0.3)  # the cancel reaches the scheduler
            after = self.session_tokens(sid)
            if before is not None and after is not None and before != after:
                self.tally.fail_check("cancelled-turn-unchanged", f"{sid}: {before} tokens before, {after} after")
            if n % 5 == 0:
                self.turn("soak-keep-%d" % (n // 5 % 2))
            for x in [sid] + ([f.session_id] if f is not None else []):
                self.call("DeleteSession", lambda timeout: self.gla.DeleteSession(
                    self.pb.DeleteSessionRequest(session_id=x), timeout=timeout))
            self.pause(0.5, 1.5)

    def w_misc(self):
        last_scrape = 0.0
        while not self.stop.is_set():
            choice = random.randrange(7)
            if choice == 0:
                self.call("ModelInfo", lambda timeout: self.gla.ModelInfo(self.pb.ModelInfoRequest(), timeout=timeout))
            elif choice == 1:
                r = self.call("Tokenize", lambda timeout: self.gla.Tokenize(
                    self.pb.TokenizeRequest(text=self.prompt().encode()), timeout=timeout))
                if r is not None:
                    self.call("Detokenize", lambda timeout: self.gla.Detokenize(
                        self.pb.DetokenizeRequest(token_ids=list(r.token_ids)), timeout=timeout))
            elif choice == 2:
                self.call("ListSessions", lambda timeout: self.gla.ListSessions(self.pb.ListSessionsRequest(),
                                                                                timeout=timeout))
            elif choice == 3:
                self.call("ListAdapters", lambda timeout: self.ft.ListAdapters(self.pb.ListAdaptersRequest(),
                                                                               timeout=timeout))
            elif choice == 4:
                self.call("ListFineTuneJobs", lambda timeout: self.ft.ListFineTuneJobs(
                    self.pb.ListFineTuneJobsRequest(), timeout=timeout))
            else:
                r = self.call("Health.Check", lambda timeout: self.health(b"", timeout=timeout))
                if r is not None and r != b"\x08\x01":
                    self.tally.fail_check("health-serving", repr(r))
            if time.time() - last_scrape > 30:
                last_scrape = time.time()
                self.scrape()
            self.pause(1.0, 3.0)

    def scrape(self):
        try:
            with urllib.request.urlopen(f"http://{self.args.metrics_addr}/metrics", timeout=10) as r:
                body = r.read().decode()
            self.tally.add("GET /metrics", "OK" if "# TYPE gla_" in body else "NO_GLA_METRICS", (), body[:200])
            return body
        except Exception as e:  # noqa: BLE001
            self.tally.add("GET /metrics", "HTTP_ERROR", (), str(e))
            return ""

    def finetune_once(self, k):
        name = f"soak-ft-{k}"
        hp = self.pb.FineTuneHyperParameters(rank=4, max_steps=6, batch_sequences=2, sequence_length=32,
                                             learning_rate=1e-3, seed=k)
        req = self.pb.CreateFineTuneJobRequest(adapter_name=name, method=self.pb.FINE_TUNE_METHOD_LORA,
                                               hyperparameters=hp)
        if k % 2:
            req.data_file = "soak-docs.txt"
        else:
            req.texts.texts.extend(s.encode() for s in random.sample(self.sentences, 12))
        job = self.call("CreateFineTuneJob", lambda timeout: self.ft.CreateFineTuneJob(req, timeout=timeout))
        if job is None:
            return
        final = None
        try:
            for ev in self.ft.WatchFineTuneJob(self.pb.WatchFineTuneJobRequest(job_id=job.id), timeout=900):
                final = ev
            self.tally.add("WatchFineTuneJob", "OK")
        except Exception as e:  # noqa: BLE001
            self.tally.add("WatchFineTuneJob", self.code_of(e), (), str(e)[:200])
        got = self.call("GetFineTuneJob", lambda timeout: self.ft.GetFineTuneJob(
            self.pb.GetFineTuneJobRequest(job_id=job.id), timeout=timeout))
        state = self.pb.FineTuneJobState.Name(got.state) if got is not None else "?"
        if state != "FINE_TUNE_JOB_STATE_SUCCEEDED" or final is None or final.step != 6:
            self.tally.fail_check("finetune-succeeded", f"{job.id}: {state} {got.error if got else ''}")
            return
        self.ft_steps.append((job.id, final.loss, final.tokens_per_second))
        ids = [random.randrange(4, self.vocab) for _ in range(12)]
        a = self.call("Generate[adapter]", lambda timeout: self.gla.Generate(
            self.req("adapter", ids=ids, max_new=8, adapter=name, ignore_eos=True), timeout=timeout))
        copy = name + "-copy"
        if self.call("LoadAdapter", lambda timeout: self.ft.LoadAdapter(
                self.pb.LoadAdapterRequest(name=copy, path=name), timeout=timeout)) is not None:
            b = self.call("Generate[adapter]", lambda timeout: self.gla.Generate(
                self.req("adapter", ids=ids, max_new=8, adapter=copy, ignore_eos=True), timeout=timeout))
            if a is not None and b is not None and list(a.token_ids) != list(b.token_ids):
                self.tally.fail_check("adapter-reload-same-tokens", f"{list(a.token_ids)} != {list(b.token_ids)}")
            # A session whose turns name the adapter.
            s = self.call("CreateSession", lambda timeout: self.gla.CreateSession(
                self.pb.CreateSessionRequest(), timeout=timeout))
            if s is not None:
                self.turn(s.session_id, adapter=copy)
                self.turn(s.session_id, adapter=copy)
                self.call("DeleteSession", lambda timeout: self.gla.DeleteSession(
                    self.pb.DeleteSessionRequest(session_id=s.session_id), timeout=timeout))
            self.stream("GenerateStream[adapter]", self.req("adapter", text=self.prompt(), max_new=16, adapter=copy))
            self.call("UnloadAdapter", lambda timeout: self.ft.UnloadAdapter(
                self.pb.UnloadAdapterRequest(name=copy), timeout=timeout))
        self.call("UnloadAdapter", lambda timeout: self.ft.UnloadAdapter(
            self.pb.UnloadAdapterRequest(name=name), timeout=timeout))
        self.call("Generate[after-unload]", lambda timeout: self.gla.Generate(
            self.req("adapter", ids=ids, max_new=4, adapter=name), timeout=timeout), EXPECTED["after-unload"])

    def finetune_cancel(self, k):
        hp = self.pb.FineTuneHyperParameters(rank=4, max_steps=100000, batch_sequences=2, sequence_length=32)
        req = self.pb.CreateFineTuneJobRequest(adapter_name=f"soak-ftc-{k}", hyperparameters=hp,
                                               data_file="soak-docs.txt")
        job = self.call("CreateFineTuneJob", lambda timeout: self.ft.CreateFineTuneJob(req, timeout=timeout))
        if job is None:
            return
        final = None
        try:
            for ev in self.ft.WatchFineTuneJob(self.pb.WatchFineTuneJobRequest(job_id=job.id), timeout=900):
                final = ev
                if ev.step == 3:
                    self.call("CancelFineTuneJob", lambda timeout: self.ft.CancelFineTuneJob(
                        self.pb.CancelFineTuneJobRequest(job_id=job.id), timeout=timeout))
            self.tally.add("WatchFineTuneJob", "OK")
        except Exception as e:  # noqa: BLE001
            self.tally.add("WatchFineTuneJob", self.code_of(e), (), str(e)[:200])
        if final is None or self.pb.FineTuneJobState.Name(final.state) != "FINE_TUNE_JOB_STATE_CANCELLED":
            self.tally.fail_check("finetune-cancelled", f"{job.id}: {final}")

    def w_finetune(self):
        k = 0
        self.stop.wait(self.args.finetune_first_s)
        while not self.stop.is_set():
            k += 1
            t0 = time.time()
            self.finetune_once(k)
            if k % 3 == 0 and not self.stop.is_set():
                self.finetune_cancel(k)
            self.ft_cycles.append(time.time() - t0)
            self.stop.wait(max(0.0, self.args.finetune_every_s - (time.time() - t0)))

    def w_sampler(self, pid, out, t0):
        while True:
            try:
                s = proc_sample(pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            total, bad = self.tally.total()
            row = (round(time.time() - t0, 1), s["rss_kib"], s["fds"], s["threads"], total, bad)
            self.samples.append(row)
            out.write("\t".join(str(x) for x in row) + "\n")
            out.flush()
            if self.stop.wait(self.args.sample_s):
                return

    def run(self, pid):
        self.ft_steps, self.ft_cycles, self.samples = [], [], []
        info = self.gla.ModelInfo(self.pb.ModelInfoRequest(), timeout=30)
        self.vocab = info.config.vocab_size
        self.idle_start = proc_sample(pid)
        t0 = time.time()
        tsv = open(os.path.join(self.args.out, "samples.tsv"), "w")
        tsv.write("elapsed_s\trss_kib\tfds\tthreads\trpcs\tunexpected\n")
        workers = [self.w_stream, self.w_unary, self.w_cancel, self.w_deadline, self.w_session, self.w_misc,
                   self.w_finetune]
        threads = [threading.Thread(target=w, name=w.__name__, daemon=True) for w in workers]
        sampler = threading.Thread(target=self.w_sampler, args=(pid, tsv, t0), daemon=True)
        sampler.start()
        for t in threads:
            t.start()
        deadline = t0 + self.args.minutes * 60
        while time.time() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.time())))
            total, bad = self.tally.total()
            if self.args.progress_s and int(time.time() - t0) % self.args.progress_s < 5:
                print(f"soak: {time.time() - t0:7.0f} s  {total} RPCs  {bad} unexpected", flush=True)
        self.stop.set()
        for t in threads:
            t.join(timeout=900)
            if t.is_alive():
                self.tally.fail_check("worker-stops", f"{t.name} still running 900 s after the stop (a hang?)")
        sampler.join()
        self.duration_s = time.time() - t0
        time.sleep(self.args.quiesce_s)
        self.idle_end = proc_sample(pid)
        self.metrics_end = self.scrape()
        tsv.write("\t".join(str(x) for x in (round(time.time() - t0, 1), self.idle_end["rss_kib"],
                                             self.idle_end["fds"], self.idle_end["threads"],
                                             *self.tally.total())) + "\t# idle, after the clients stopped\n")
        tsv.close()

    def drain_stream(self):
        """One stream in flight while glad drains: it must end OK (finishing within the grace)."""
        self.drain_result = self.stream("GenerateStream[drain]", self.req("drain", text=self.prompt(), max_new=48,
                                                                          ignore_eos=True))


def server_codes_by_kind(log_path):
    """From glad's request log lines: {kind of request_id: Counter(status name)}, and the deadline
    requests glad ended with CANCELLED: (client deadline ms, glad's total_s)."""
    out = collections.defaultdict(collections.Counter)
    cancelled_deadlines = []
    pat = re.compile(r"request id=soak-([a-z0-9]+)-\d+(?:-t(\d+))? .*total_s=([0-9.]+) .*status=(\d+)")
    with open(log_path, errors="replace") as f:
        for line in f:
            m = pat.search(line)
            if m:
                code = CODE_NAMES.get(int(m.group(4)), m.group(4))
                out[m.group(1)][code] += 1
                if m.group(1) == "deadline" and code == "CANCELLED":
                    cancelled_deadlines.append((int(m.group(2) or 0), float(m.group(3))))
    return out, cancelled_deadlines


def metric_counts(body):
    out = {}
    for line in body.splitlines():
        m = re.match(r'gla_requests_total\{(.*)\} (\S+)', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[(labels.get("method"), labels.get("code"))] = float(m.group(2))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-dir", default=os.path.join(REPO, "build"),
                   help="a build: BUILD/server/glad and BUILD/proto/python (default: build/)")
    p.add_argument("--glad", help="glad binary (default BUILD/server/glad)")
    p.add_argument("--model", default=os.path.join(REPO, "models", "gla-brown"))
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--out", required=True, help="folder for the state dirs, glad.log, samples.tsv, summary")
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--glad-threads", type=int, default=1, help="glad --threads (BLAS threads): keep the load moderate")
    p.add_argument("--prefix-cache-mb", type=int, default=8,
                   help="glad --prefix_cache_mb: small, so that the cache fills during the warm-up and evicts from "
                        "then on (its default 1 GiB would fill slowly with repeated prompts and read as growth)")
    p.add_argument("--malloc-arena-max", type=int, default=2,
                   help="MALLOC_ARENA_MAX for glad (0: glibc's default of 8 per core). glibc keeps freed memory "
                        "in per-thread arenas: each fine-tune job's buffers can land in another arena, a step of "
                        "~15 MiB per new arena up to the arena count (bounded; reads as growth in a short run)")
    p.add_argument("--finetune-every-s", type=float, default=300.0)
    p.add_argument("--finetune-first-s", type=float, default=20.0)
    p.add_argument("--rpc-timeout-s", type=float, default=120.0)
    p.add_argument("--quiesce-s", type=float, default=15.0, help="idle time before the last sample")
    p.add_argument("--rss-slope-pct", type=float, default=5.0,
                   help="flat: RSS slope over the second half below this %% of the median RSS per hour")
    p.add_argument("--fd-tolerance", type=int, default=2)
    p.add_argument("--thread-tolerance", type=int, default=2)
    p.add_argument("--progress-s", type=int, default=300)
    args = p.parse_args()

    stubs = os.path.join(args.build_dir, "proto", "python")
    glad = args.glad or os.path.join(args.build_dir, "server", "glad")
    for path in (stubs, glad):
        if not os.path.exists(path):
            sys.exit(f"soak: {path} is missing: build first (this test builds nothing)")
    sys.path.insert(0, stubs)
    import grpc  # noqa: E402  Debian's python3-grpcio
    from gla.v1 import gla_pb2, gla_pb2_grpc  # noqa: E402  generated by the build

    os.makedirs(args.out, exist_ok=True)
    dirs = {k: os.path.join(args.out, k) for k in ("sessions", "adapters", "data")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(args.model, "heldout_sample.txt"), encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    with open(os.path.join(dirs["data"], "soak-docs.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:30]) + "\n")

    log_path = os.path.join(args.out, "glad.log")
    cmd = [glad, "--model", args.model, "--backend", "cpu", "--listen", "127.0.0.1:0",
           "--threads", str(args.glad_threads), "--metrics_listen", "127.0.0.1:0",
           "--session_dir", dirs["sessions"], "--session_memory_mb", "1",
           "--adapter_dir", dirs["adapters"], "--finetune_data_dir", dirs["data"],
           "--prefix_cache_mb", str(args.prefix_cache_mb)]
    env = dict(os.environ)
    if args.malloc_arena_max > 0:
        env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
    print("soak: " + (f"MALLOC_ARENA_MAX={args.malloc_arena_max} " if args.malloc_arena_max > 0 else "") +
          " ".join(cmd), flush=True)
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    port = mport = None
    for _ in range(600):
        with open(log_path, errors="replace") as f:
            text = f.read()
        port = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
        mport = re.search(r"metrics.*?127\.0\.0\.1:(\d+)", text)
        if (port and mport) or proc.poll() is not None:
            break
        time.sleep(0.1)
    if not (port and mport):
        proc.kill()
        sys.exit("soak: glad did not start:\n" + open(log_path).read())
    args.addr, args.metrics_addr = f"127.0.0.1:{port.group(1)}", f"127.0.0.1:{mport.group(1)}"
    print(f"soak: glad pid {proc.pid} on {args.addr}, metrics {args.metrics_addr}; {args.minutes:g} min; "
          f"output in {args.out}", flush=True)

    soak = Soak(args, grpc, gla_pb2, gla_pb2_grpc)
    try:
        soak.run(proc.pid)
    except BaseException:
        proc.kill()
        raise

    # ---- shutdown: SIGTERM with one stream in flight
    drain = threading.Thread(target=soak.drain_stream)
    drain.start()
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "hung (killed after 120 s)"
    drain.join(timeout=30)
    log.close()
    with open(log_path, errors="replace") as f:
        log_text = f.read()
    drained = "draining" in log_text and "glad: stopped" in log_text
    session_files = sorted(x for x in os.listdir(dirs["sessions"]) if x.endswith(".glasession"))
    kept = all(f"soak-keep-{k}.glasession" in session_files for k in range(2))

    # ---- summary
    tally, lines_out = soak.tally, []
    say = lines_out.append
    say(f"soak summary: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, "
        f"{soak.duration_s / 60:.1f} min of traffic, glad {glad} on the CPU backend "
        f"(--threads {args.glad_threads}, --prefix_cache_mb {args.prefix_cache_mb}, MALLOC_ARENA_MAX "
        f"{args.malloc_arena_max or 'default'}), model {args.model}, {os.cpu_count()} CPU cores")
    say("")
    say("requests by method and code (client side):")
    methods = sorted({m for m, _ in tally.counts})
    for m in methods:
        codes = {c: n for (mm, c), n in tally.counts.items() if mm == m}
        say(f"  {m:34s} " + "  ".join(f"{c}={n}" for c, n in sorted(codes.items())))
    total = sum(tally.counts.values())
    say(f"  total {total}")
    say("")
    by_kind, cancelled_deadlines = server_codes_by_kind(log_path)
    say("server side (glad's request log lines, by kind of request id):")
    for kind in sorted(by_kind):
        say(f"  {kind:10s} " + "  ".join(f"{c}={n}" for c, n in sorted(by_kind[kind].items())))
    dl = by_kind.get("deadline", {})
    say(f"  deadline cases ended in glad as: {dict(dl) or 'none logged'} "
        f"(DEADLINE_EXCEEDED = the fixed behaviour; CANCELLED = before the fix)")
    if cancelled_deadlines:
        say("  deadline cases glad logged CANCELLED (client deadline ms, glad's total_s): " +
            ", ".join(f"{t} ms/{s:.4f} s" for t, s in cancelled_deadlines[:20]))
    mc = metric_counts(soak.metrics_end)
    say("  gla_requests_total at the end: " + ", ".join(f"{m}/{c}={int(v)}" for (m, c), v in sorted(mc.items())))
    say("")
    if soak.ft_steps:
        say(f"fine-tune jobs: {len(soak.ft_steps)} succeeded (6 steps each; last loss "
            f"{soak.ft_steps[-1][1]:.3f}, {soak.ft_steps[-1][2]:.0f} tok/s); cycle time max "
            f"{max(soak.ft_cycles):.1f} s")
        say("")

    samples = soak.samples
    half = soak.duration_s / 2
    second = [s for s in samples if s[0] >= half] or samples
    hours = [s[0] / 3600 for s in second]

    def stats(col):
        vals = [s[col] for s in samples]
        sec = [s[col] for s in second]
        return vals[0], vals[-1], max(vals), linear_slope(hours, sec), sorted(sec)[len(sec) // 2]

    rss, fds, thr = stats(1), stats(2), stats(3)
    say(f"resources ({len(samples)} samples every {args.sample_s:g} s; slope = least-squares fit over the second "
        f"half, per hour):")
    say(f"  RSS KiB   first {rss[0]}  last {rss[1]}  max {rss[2]}  median(2nd half) {rss[4]}  "
        f"slope {rss[3]:+.0f} KiB/h ({100 * rss[3] / rss[4]:+.2f}% of the median per hour)")
    say(f"  fds       first {fds[0]}  last {fds[1]}  max {fds[2]}  slope {fds[3]:+.2f}/h")
    say(f"  threads   first {thr[0]}  last {thr[1]}  max {thr[2]}  slope {thr[3]:+.2f}/h")
    say(f"  idle before traffic: RSS {soak.idle_start['rss_kib']} KiB, {soak.idle_start['fds']} fds, "
        f"{soak.idle_start['threads']} threads; idle after ({args.quiesce_s:g} s after the clients stopped): "
        f"RSS {soak.idle_end['rss_kib']} KiB, {soak.idle_end['fds']} fds, {soak.idle_end['threads']} threads")
    say("")
    say(f"shutdown: SIGTERM with one stream in flight -> exit status {rc}; draining/stopped lines: "
        f"{'yes' if drained else 'NO'}; in-flight stream: {'OK' if soak.drain_result else 'FAILED'}; "
        f"session files written: {len(session_files)} (kept sessions present: {'yes' if kept else 'NO'})")
    say("")
    unexpected = tally.unexpected
    say(f"unexpected errors: {len(unexpected)}")
    for t, label, code, detail in unexpected[:30]:
        say(f"  {time.strftime('%H:%M:%S', time.gmtime(t))} {label} {code}: {detail}")

    rss_flat = abs(rss[3]) < args.rss_slope_pct / 100 * rss[4] or rss[3] <= 0
    # Baseline of fds and threads: the most the first half (warm-up included) needed. Flat: neither
    # the second half nor the idle end goes above it by more than the tolerance.
    first = [s for s in samples if s[0] < half] or samples[:1]
    base_fds, base_thr = max(s[2] for s in first), max(s[3] for s in first)
    fd_flat = max(max(s[2] for s in second), soak.idle_end["fds"]) <= base_fds + args.fd_tolerance
    thr_flat = max(max(s[3] for s in second), soak.idle_end["threads"]) <= base_thr + args.thread_tolerance
    clean = rc == 0 and drained and bool(soak.drain_result) and kept
    ok = not unexpected and rss_flat and fd_flat and thr_flat and clean
    say("")
    say(f"verdict: {'PASS' if ok else 'FAIL'} — unexpected errors {len(unexpected)} (must be 0); "
        f"RSS {'flat' if rss_flat else 'GROWING'} (slope {rss[3]:+.0f} KiB/h, threshold "
        f"{args.rss_slope_pct:g}% of the median = {args.rss_slope_pct / 100 * rss[4]:.0f} KiB/h); "
        f"fds {'within' if fd_flat else 'ABOVE'} baseline (2nd half max {max(s[2] for s in second)}, idle end "
        f"{soak.idle_end['fds']} vs first-half max {base_fds} + {args.fd_tolerance}); threads "
        f"{'within' if thr_flat else 'ABOVE'} baseline (2nd half max {max(s[3] for s in second)}, idle end "
        f"{soak.idle_end['threads']} vs first-half max {base_thr} + {args.thread_tolerance}); "
        f"shutdown {'clean' if clean else 'NOT CLEAN'}")
    text = "\n".join(lines_out) + "\n"
    print(text, end="")
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"duration_s": soak.duration_s, "counts": {f"{m} {c}": n for (m, c), n in tally.counts.items()},
                   "unexpected": unexpected, "server_by_kind": by_kind, "rss": rss, "fds": fds, "threads": thr,
                   "idle_start": soak.idle_start, "idle_end": soak.idle_end, "exit_status": rc,
                   "drained": drained, "cancelled_deadlines": cancelled_deadlines, "pass": ok}, f, indent=1, default=str)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
