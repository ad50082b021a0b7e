"""The Python client follows a dns:/// name (clients/python/gla_client.py, GlaClient refresh_s): the
name's answers are played by a stand-in for socket.getaddrinfo and the clock by a counter, so no DNS
or server is needed. Replicas the name gains are used, lost ones are not; a failed or empty lookup
keeps the last list; a known replica keeps its channel; a plain address list is never looked up.

    /usr/bin/python3 python_client_refresh_test.py SOURCE_DIR STUBS_DIR
"""
import socket
import sys

src, stubs = sys.argv[1], sys.argv[2]
sys.path.insert(0, f"{src}/clients/python")
import gla_client as g  # noqa: E402

answers = {"glad-headless.test": ["10.0.0.1", "10.0.0.2"]}
lookups = []
real = socket.getaddrinfo


def fake_getaddrinfo(host, port, *args, **kwargs):
    lookups.append(host)
    if host not in answers:
        return real(host, port, *args, **kwargs)
    if answers[host] is None:
        raise socket.gaierror(socket.EAI_NONAME, "no such name")
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port))) for ip in answers[host]]


socket.getaddrinfo = fake_getaddrinfo
failures = []


def expect(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


now = [0.0]
c = g.GlaClient("dns:///glad-headless.test:50051", stubs_dir=stubs, refresh_s=30)
c._clock = lambda: now[0]
c._resolved_at = 0.0
expect(c.replicas == ["10.0.0.1:50051", "10.0.0.2:50051"], f"the name's two addresses: {c.replicas}")
kept = c._channels["10.0.0.2:50051"]
answers["glad-headless.test"] = ["10.0.0.2", "10.0.0.3"]
now[0] = 29.0
c._stub("s-1")
expect(c.replicas == ["10.0.0.1:50051", "10.0.0.2:50051"], "not looked up again before refresh_s")
now[0] = 30.0
picked = {c._stub(f"s-{i}") for i in range(40)}
expect(c.replicas == ["10.0.0.2:50051", "10.0.0.3:50051"], f"after refresh_s: the name's new addresses: {c.replicas}")
expect(c._channels["10.0.0.2:50051"] is kept, "a replica it still has keeps its channel")
expect(picked <= {c._channels[r][1] for r in c.replicas} and len(picked) == 2,
       "sessions go to the replicas it has now, both of them")
expect(c.stub is c._channels["10.0.0.2:50051"][1], "calls about no session go to the first replica now")
answers["glad-headless.test"] = None
now[0] = 60.0
c._stub("s-1")
expect(c.replicas == ["10.0.0.2:50051", "10.0.0.3:50051"], "a failed lookup keeps the last list")
answers["glad-headless.test"] = []
expect(c.refresh_replicas() is False and len(c.replicas) == 2, "a lookup with no address keeps the last list")
answers["glad-headless.test"] = ["10.0.0.4"]
expect(c.refresh_replicas() is True and c.replicas == ["10.0.0.4:50051"], "refresh_replicas() follows the name now")

before = len(lookups)
plain = g.GlaClient("10.0.0.9:1,10.0.0.8:1", stubs_dir=stubs, refresh_s=0)
for i in range(5):
    plain._stub(f"s-{i}")
expect(len(lookups) == before and plain.replicas == ["10.0.0.8:1", "10.0.0.9:1"], "a plain list is never looked up")
sys.exit(1 if failures else 0)
