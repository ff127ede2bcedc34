#!/usr/bin/env python3
"""Side-by-side benchmark of Python job queues: the performance anchor for codeQ.

Stdlib only.  Normally started by peers/run.sh, which installs the servers and builds one
venv per peer library; this script starts its own redis-server and beanstalkd on free
127.0.0.1 ports with data in a temp dir (and for the codeQ cases a codeq serve on that
redis-server), runs every case, stops the servers (by PID) and prints one JSON document on
stdout and a readable table on stderr.

Per case (same workload everywhere: N no-op tasks with payload {"i": n, "pad": 64 chars}):
  enqueue  one producer process enqueues N tasks; nobody consumes.  tasks/s = N / time
           from first enqueue call to last enqueue return, measured inside the producer.
  drain    then one worker process is started on the full queue.  tasks/s = N / time from
           spawning the worker process (imports and connect included) to the last task
           body finishing.  Also reported: "steady" = tasks/s from first to last task body.
  mixed    Redis flushed; a worker is started and proven live with one warm-up task, then
           one producer enqueues N tasks while it runs.  tasks/s = N / time from the first
           enqueue to the last task body finishing.
Every task body appends (task number, CLOCK_MONOTONIC) to a file; a phase passes only if
all N distinct task numbers appear.  After each phase the queue is inspected with the
library's own keys (backlog) to check that nothing is left queued or unacknowledged.
Each phase has a time limit (--timeout, default 180 s); a phase past it is recorded as a
timeout together with how many tasks it had finished.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

PEERS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REC = struct.Struct("<Id")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# name, adapter module (bench/peers/<adapter>.py), venv (requirements/<venv>.txt), variant, server
CASES = [
    ("raw-redis-floor", "raw_redis_peer", "raw", "", "redis"),
    ("rq-simple", "rq_peer", "rq", "simple", "redis"),
    ("rq-fork", "rq_peer", "rq", "fork", "redis"),
    ("arq", "arq_peer", "arq", "", "redis"),
    ("arq-poll10ms", "arq_peer", "arq", "poll10ms", "redis"),
    ("saq", "saq_peer", "saq", "", "redis"),
    ("celery-solo", "celery_peer", "celery", "solo", "redis"),
    ("celery-threads50", "celery_peer", "celery", "threads", "redis"),
    ("dramatiq-t8", "dramatiq_peer", "dramatiq", "t8", "redis"),
    ("dramatiq-t50", "dramatiq_peer", "dramatiq", "t50", "redis"),
    ("taskiq-stream", "taskiq_peer", "taskiq", "stream", "redis"),
    ("taskiq-list", "taskiq_peer", "taskiq", "list", "redis"),
    ("huey-w1", "huey_peer", "huey", "w1", "redis"),
    ("huey-w50", "huey_peer", "huey", "w50", "redis"),
    ("beanstalkd", "beanstalk_peer", "beanstalk", "plain", "beanstalk"),
    ("beanstalkd-touch", "beanstalk_peer", "beanstalk", "touch", "beanstalk"),
    ("codeq", "codeq_peer", "codeq", "", "codeq"),
    ("codeq-p50", "codeq_peer", "codeq", "p50", "codeq"),
    ("codeq-raw", "codeq_peer", "codeq", "raw", "codeq"),
    # Added in codeQ's copy: the batch endpoints (POST /tasks/batch of 100;
    # claim/batch + batch/results).
    ("codeq-batch", "codeq_peer", "codeq", "batch", "codeq"),
    # And the Python SDK: codeq.client producers, a codeq.worker.Worker.
    ("codeq-sdk", "codeq_peer", "codeq", "sdk", "codeq"),
    ("codeq-sdk-batch", "codeq_peer", "codeq", "sdk-batch", "codeq"),
]
REDIS_BACKED = ("redis", "codeq")  # server "codeq": a codeq serve per phase, on the harness's redis-server

CONTENDED = 0.10  # a phase where foreign processes used >10% of all CPUs is flagged

LUA_POP_HSET = (
    "local v = redis.call('RPOP', KEYS[1]) "
    "if v then redis.call('HSET', KEYS[2], v, '1') end "
    "return v"
)


def log(msg):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# ----------------------------------------------------------------------------- helpers


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Resp:
    """Minimal RESP2 client for the orchestrator's own admin commands."""

    def __init__(self, port, timeout=60):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.rf = self.sock.makefile("rb")

    def __call__(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += [b"$%d\r\n" % len(a), a, b"\r\n"]
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.rf.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.rf.read(n + 2)[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError("bad RESP reply %r" % line)

    def info(self, section=""):
        raw = self("INFO", section) if section else self("INFO")
        d = {}
        for ln in raw.decode().splitlines():
            if ":" in ln and not ln.startswith("#"):
                k, v = ln.split(":", 1)
                d[k] = v
        return d

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def proc_cpu(pid, children=True):
    """utime+stime (+ reaped children's) of one process, seconds; None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    ticks = int(parts[11]) + int(parts[12])
    if children:
        ticks += int(parts[13]) + int(parts[14])
    return ticks / CLK_TCK


def group_cpu(pgid):
    """CPU seconds of all live processes in a process group (and their reaped children)."""
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                parts = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            continue
        if int(parts[2]) == pgid:
            total += (int(parts[11]) + int(parts[12]) + int(parts[13]) + int(parts[14])) / CLK_TCK
    return total


def machine_cpu():
    """(user+nice+system, steal) CPU seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2]) / CLK_TCK, v[7] / CLK_TCK


class Meter:
    """How much CPU the whole machine burned during a phase versus our own processes.

    own = servers + worker group + reaped children (producers, inspections) + this script;
    foreign = machine busy (user+nice+system) - own: load from processes this benchmark
    did not start (other jobs on a shared host).  Softirq time of loopback traffic is left
    out of both sides.
    """

    def __init__(self, servers, group=None):
        self.servers = [srv for srv in servers if srv]
        self.group = group
        self.t = time.monotonic()
        self.busy, self.steal = machine_cpu()
        self.srv = sum(srv.cpu() or 0 for srv in self.servers)
        ru = __import__("resource").getrusage(__import__("resource").RUSAGE_CHILDREN)
        self.children = ru.ru_utime + ru.ru_stime
        tm = os.times()
        self.me = tm.user + tm.system
        self.g = group_cpu(group) if group else 0.0

    def stop(self, group=None):
        import resource

        wall = time.monotonic() - self.t
        busy, steal = machine_cpu()
        srv = sum(srv.cpu() or 0 for srv in self.servers)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        tm = os.times()
        group = group or self.group
        g = group_cpu(group) if group else 0.0
        own = (srv - self.srv) + (ru.ru_utime + ru.ru_stime - self.children) + (tm.user + tm.system - self.me) \
            + max(0.0, g - self.g)
        foreign = max(0.0, (busy - self.busy) - own)
        ncpu = os.cpu_count() or 1
        return {"wall_s": round(wall, 3), "machine_busy_cpu_s": round(busy - self.busy, 2),
                "own_cpu_s": round(own, 2), "foreign_cpu_s": round(foreign, 2),
                "foreign_share": round(foreign / (wall * ncpu), 3) if wall > 0 else None,
                "steal_s": round(steal - self.steal, 2)}


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(p, grace=8.0):
    """Stop a process we started in its own session (pgid == p.pid).

    SIGTERM to the leader only (what a supervisor would send; library CLIs forward it to
    their children), wait up to `grace` s for the whole group to be gone, then SIGKILL the
    group.  Returns {"rc", "stopped_by", "stop_s"}.
    """
    pgid = p.pid
    t0 = time.monotonic()
    how = "exited"
    if p.poll() is None:
        how = "SIGTERM"
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = t0 + grace
    while time.monotonic() < end:
        p.poll()
        if p.returncode is not None and not group_alive(pgid):
            break
        time.sleep(0.05)
    else:
        how = "SIGKILL after %.0f s" % grace
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    return {"rc": p.returncode, "stopped_by": how, "stop_s": round(time.monotonic() - t0, 2)}


def tail(path, n=25):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
        return lines[-n:]
    except FileNotFoundError:
        return []


def read_done(path, n, first=0):
    """-> (dict task -> first completion time, total records, out-of-range records)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}, 0, 0
    cnt = len(data) // REC.size
    seen = {}
    other = 0
    for i, t in REC.iter_unpack(data[: cnt * REC.size]):
        if first <= i < first + n:
            if i not in seen:
                seen[i] = t
        else:
            other += 1
    return seen, cnt - other, other


# ----------------------------------------------------------------------------- servers


class RedisServer:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir)
        self.port = free_port()
        self.argv = [
            shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
            "--protected-mode", "yes", "--dir", self.dir, "--save", "", "--appendonly", "yes",
            "--appendfsync", "everysec", "--daemonize", "no",
            "--logfile", os.path.join(self.dir, "redis.log"),
        ]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.pid = self.proc.pid
        end = time.monotonic() + 20
        while True:
            try:
                c = Resp(self.port, timeout=2)
                if c("PING") == "PONG":
                    c.close()
                    break
            except (OSError, RuntimeError):
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("redis-server did not start: %s" % tail(os.path.join(self.dir, "redis.log")))
                time.sleep(0.05)
        self.admin = Resp(self.port)
        self.version = self.admin.info("server").get("redis_version")

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def reset(self):
        """FLUSHALL, then rewrite the AOF so that every case starts from a small AOF."""
        self.admin("FLUSHALL")
        self.wait_aof()
        try:
            self.admin("BGREWRITEAOF")
        except RuntimeError:
            pass
        self.wait_aof()
        self.admin("CONFIG", "RESETSTAT")

    def wait_aof(self, limit=60):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            p = self.admin.info("persistence")
            if p.get("aof_rewrite_in_progress") == "0" and p.get("aof_rewrite_scheduled") == "0":
                return
            time.sleep(0.05)

    def cmdstats(self):
        d = self.admin.info("commandstats")
        out = {}
        for k, v in d.items():
            if k.startswith("cmdstat_"):
                m = re.search(r"calls=(\d+)", v)
                if m:
                    out[k[len("cmdstat_"):]] = int(m.group(1))
        return out

    def cpu(self):
        return proc_cpu(self.pid, children=False)

    def stop(self):
        try:
            self.admin.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()


class BeanstalkServer:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "beanstalkd")
        os.makedirs(self.dir)
        self.port = free_port()
        self.argv = [shutil.which("beanstalkd"), "-l", "127.0.0.1", "-p", str(self.port), "-b", self.dir]
        self.log = os.path.join(workdir, "beanstalkd.log")
        self.proc = subprocess.Popen(self.argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid
        end = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(b"stats\r\n")
                    data = b""
                    while b"\r\n" not in data or len(data) < 64:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    m = re.search(rb"version: \"?([\d.]+)", data)
                    self.version = m.group(1).decode() if m else None
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("beanstalkd did not start: %s" % tail(self.log))
                time.sleep(0.05)

    def cpu(self):
        return proc_cpu(self.pid, children=False)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()


class CodeqServer:
    """`codeq serve --workers 1` from the codeq venv on a free 127.0.0.1 port, with the
    harness's redis-server as its store; CODEQ_* settings are not inherited."""

    def __init__(self, venv, redis, workdir, tag):
        self.port = free_port()
        self.argv = [os.path.join(venv, "bin", "codeq"), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                     "--workers", "1", "--store", redis.url]
        self.log = os.path.join(workdir, "%s.codeq-serve.log" % tag)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODEQ_")}
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(self.argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        self.pid = self.proc.pid
        end = time.monotonic() + 30
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > end:
                how = self.stop()["stopped_by"]
                raise RuntimeError("codeq serve did not start (%s): %s" % (how, tail(self.log)))
            time.sleep(0.05)

    def healthy(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            c.request("GET", "/healthz")
            ok = c.getresponse().status == 200
            c.close()
            return ok
        except OSError:
            return False

    def cpu(self):
        return group_cpu(self.pid)

    def stop(self):
        """SIGTERM, SIGKILL to its group after 8 s; a clean shutdown exits 0."""
        out = {"pid": self.pid, "port": self.port, "log": os.path.basename(self.log)}
        out.update(stop_group(self.proc))
        if out["rc"] != 0:
            out["log_tail"] = tail(self.log)
        return out


# ----------------------------------------------------------------------------- limits


def parse_rps(text):
    out = {}
    for ln in re.split(r"[\r\n]+", text):
        m = re.match(r"^\s*(.+?): ([\d.]+) requests per second", ln)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def run_limits(redis, n=200000, pipeline=32):
    res = {"tool": "redis-benchmark (default 50 clients)", "requests": n, "pipeline": pipeline}
    bench = shutil.which("redis-benchmark")
    base = [bench, "-h", "127.0.0.1", "-p", str(redis.port)]
    redis.reset()
    cmd = base + ["-t", "lpush,rpop", "-n", str(n), "-P", str(pipeline), "-q"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    rps = parse_rps(p.stdout)
    res["lpush_rps"] = rps.get("LPUSH")
    res["rpop_rps"] = rps.get("RPOP")
    res["lpush_rpop_cmd"] = " ".join(["redis-benchmark"] + cmd[1:])
    # EVALSHA of a Lua RPOP + HSET; prefill the list so that every RPOP returns an element
    redis.reset()
    sha = redis.admin("SCRIPT", "LOAD", LUA_POP_HSET).decode()
    fill = base + ["-n", str(n + n // 10), "-P", str(pipeline), "-r", "1000000000", "-q",
                   "LPUSH", "bench:k1", "__rand_int__"]
    subprocess.run(fill, capture_output=True, text=True, timeout=300)
    before = redis.admin("LLEN", "bench:k1")
    cmd = base + ["-n", str(n), "-P", str(pipeline), "-q", "EVALSHA", sha, "2", "bench:k1", "bench:k2"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    after = redis.admin("LLEN", "bench:k1")
    rps = parse_rps(p.stdout)
    res["evalsha_rpop_hset_rps"] = next(iter(rps.values()), None)
    res["evalsha_script"] = LUA_POP_HSET
    res["evalsha_cmd"] = " ".join(["redis-benchmark"] + cmd[1:])
    res["evalsha_popped"] = before - after
    res["evalsha_hash_fields"] = redis.admin("HLEN", "bench:k2")
    if res["evalsha_rpop_hset_rps"] is None or res["lpush_rps"] is None:
        res["error"] = (p.stdout + p.stderr)[-2000:]
    redis.reset()
    return res


# ----------------------------------------------------------------------------- runner


def cpu_since(s0, s1):
    """server_cpu_s of a phase (all the case's server processes), split per process when several."""
    d = {k: round(s1[k] - s0[k], 3) for k in s1}
    out = {"server_cpu_s": round(sum(d.values()), 3)}
    if len(d) > 1:
        out["server_cpu_by_process_s"] = d
    return out


class Runner:
    def __init__(self, args, workdir, redis, beanstalk):
        self.a = args
        self.workdir = workdir
        self.redis = redis
        self.beanstalk = beanstalk
        self.codeq = None  # the running CodeqServer of a codeQ case
        self.codeq_stops = []
        self.seq = 0

    @property
    def servers(self):
        return [self.redis, self.beanstalk, self.codeq]

    def env(self, case, queue, done_file, result_file, n=None, first=0):
        name, adapter, venv, variant, server = case
        e = dict(os.environ)
        e.update({
            "BENCH_N": str(self.a.n if n is None else n),
            "BENCH_FIRST": str(first),
            "BENCH_QUEUE": queue,
            "BENCH_VARIANT": variant,
            "BENCH_REDIS_URL": self.redis.url if self.redis else "redis://127.0.0.1:1/0",
            "BENCH_BEANSTALK_PORT": str(self.beanstalk.port if self.beanstalk else 1),
            "BENCH_CODEQ_PORT": str(self.codeq.port if self.codeq else 1),
            "BENCH_DONE_FILE": done_file,
            "BENCH_RESULT_FILE": result_file,
            "BENCH_PRODUCER_CONCURRENCY": str(self.a.producer_concurrency),
            "PYTHONPATH": PEERS_DIR,
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        e["PATH"] = os.path.join(self.a.venv_root, venv, "bin") + os.pathsep + e.get("PATH", "")
        return e

    def python(self, case):
        return os.path.join(self.a.venv_root, case[2], "bin", "python")

    def spawn(self, case, action, env, logfile):
        f = open(logfile, "ab")
        return subprocess.Popen([self.python(case), "-m", "bench.cli", case[1], action], cwd=PEERS_DIR,
                                env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def call(self, case, action, env, timeout=60):
        p = subprocess.run([self.python(case), "-m", "bench.cli", case[1], action], cwd=PEERS_DIR, env=env,
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise RuntimeError("%s %s failed rc=%s: %s" % (case[1], action, p.returncode, p.stderr[-1500:]))
        return json.loads(p.stdout.strip().splitlines()[-1])

    def backlog(self, case, env):
        try:
            return self.call(case, "backlog", env)
        except Exception as e:
            return {"error": repr(e)[-500:]}

    def server_cpu(self, case):
        """CPU seconds so far of the case's server processes, {name: s}; codeQ counts with its Redis."""
        if case[4] == "beanstalk":
            return {"beanstalkd": self.beanstalk.cpu()}
        out = {"redis-server": self.redis.cpu()}
        if case[4] == "codeq":
            out["codeq serve"] = self.codeq.cpu()
        return out

    def reset(self, case):
        """Before the split and the mixed phase: flush Redis; a codeQ case gets a fresh codeq serve."""
        self.stop_codeq()
        if case[4] in REDIS_BACKED:
            self.redis.reset()
        if case[4] == "codeq":
            self.codeq = CodeqServer(os.path.join(self.a.venv_root, case[2]), self.redis, self.workdir,
                                     "%02d-%s" % (self.seq, case[0]))
            self.redis.admin("CONFIG", "RESETSTAT")  # leave its start-up commands out

    def stop_codeq(self):
        if self.codeq:
            self.codeq_stops.append(self.codeq.stop())
            self.codeq = None

    def watch(self, worker):
        """Processes that must stay alive while a phase waits for completions."""
        return [("worker", worker)] + ([("codeq serve", self.codeq.proc)] if self.codeq else [])

    def cmdstats(self, case):
        if case[4] not in REDIS_BACKED:
            return None
        return self.redis.cmdstats()

    # -- waiting for completions

    def wait_done(self, done_file, n, first, deadline, watch):
        """Poll the completion file.  watch: list of (label, Popen) that must stay alive."""
        target = n * REC.size
        last_parse = 0.0
        while True:
            try:
                size = os.stat(done_file).st_size
            except FileNotFoundError:
                size = 0
            now = time.monotonic()
            if size >= target and now - last_parse > 0.05:
                last_parse = now
                seen, total, _ = read_done(done_file, n, first)
                if len(seen) >= n:
                    return "ok", seen, total
            for label, p in watch:
                if p.poll() is not None:
                    time.sleep(0.3)
                    seen, total, _ = read_done(done_file, n, first)
                    if len(seen) >= n:
                        return "ok", seen, total
                    return "%s exited rc=%s" % (label, p.returncode), seen, total
            if now > deadline:
                seen, total, _ = read_done(done_file, n, first)
                return ("ok", seen, total) if len(seen) >= n else ("timeout", seen, total)
            time.sleep(0.01)

    # -- phases

    def phase_files(self, case, tag):
        self.seq += 1
        base = os.path.join(self.workdir, "%02d-%s-%s" % (self.seq, case[0], tag))
        return base + ".done", base + ".result.json", base + ".producer.log", base + ".worker.log"

    def run_producer(self, case, env, logfile, result_file, deadline):
        t_spawn = time.monotonic()
        p = self.spawn(case, "produce", env, logfile)
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop_group(p)
            return {"status": "timeout", "spawned_at": t_spawn}
        if p.returncode != 0 or not os.path.exists(result_file):
            return {"status": "producer failed rc=%s" % p.returncode, "log_tail": tail(logfile)}
        with open(result_file) as f:
            r = json.load(f)
        r["status"] = "ok" if r["enqueued"] == int(env["BENCH_N"]) and not r["errors"] else "errors"
        r["spawned_at"] = t_spawn
        return r

    def finish_worker(self, case, worker, env, out, wlog, pgid_cpu_at_done=True):
        out["worker_cpu_s"] = round(group_cpu(worker.pid), 3) if pgid_cpu_at_done else None
        time.sleep(0.3)  # let the last acknowledgements land
        bl = self.backlog(case, env)
        if isinstance(bl.get("unfinished"), int) and bl["unfinished"] > 0:
            time.sleep(1.5)
            bl = self.backlog(case, env)
        out["backlog_after"] = bl
        out["worker_stop"] = stop_group(worker)
        # an adapter's worker may print one "worker-stats {json}" line when stopped
        stats = [ln for ln in tail(wlog, 10) if ln.startswith("worker-stats ")]
        if stats:
            out["worker_stats"] = json.loads(stats[-1].split(" ", 1)[1])

    def run_split(self, case, queue):
        """enqueue phase, then drain phase on the same queue."""
        a, n = self.a, self.a.n
        done, resf, plog, wlog = self.phase_files(case, "split")
        self.reset(case)
        env = self.env(case, queue, done, resf)
        # --- enqueue
        enq = {}
        s0 = self.server_cpu(case)
        meter = Meter(self.servers)
        r = self.run_producer(case, env, plog, resf, time.monotonic() + a.timeout)
        machine = meter.stop()
        s1 = self.server_cpu(case)
        enq.update(r)
        enq["machine"] = machine
        enq.update(cpu_since(s0, s1))
        cs = self.cmdstats(case)
        if cs is not None:
            enq["redis_cmds"] = cs
            enq["redis_cmds_per_task"] = round(sum(cs.values()) / n, 2)
        if r.get("status") == "ok":
            enq["tasks_per_s"] = round(r["enqueued"] / r["seconds"], 1)
        bl = self.backlog(case, env)
        enq["backlog_after"] = bl
        if isinstance(bl.get("unfinished"), int) and bl["unfinished"] != n:
            enq["note"] = "backlog after enqueue is %s, expected %d" % (bl["unfinished"], n)
        enq.pop("spawned_at", None)
        drain = {}
        if r.get("status") not in ("ok", "errors"):
            drain["status"] = "skipped: enqueue did not finish"
            return enq, drain
        # --- drain
        if case[4] in REDIS_BACKED:
            self.redis.admin("CONFIG", "RESETSTAT")
        s0 = self.server_cpu(case)
        meter = Meter(self.servers)
        t_spawn = time.monotonic()
        w = self.spawn(case, "work", env, wlog)
        status, seen, total = self.wait_done(done, n, 0, t_spawn + a.timeout, self.watch(w))
        t_seen = time.monotonic()
        drain["machine"] = meter.stop(group=w.pid)
        s1 = self.server_cpu(case)
        cs = self.cmdstats(case)
        drain["status"] = status
        drain["completed"] = len(seen)
        drain["duplicates"] = total - len(seen)
        drain.update(cpu_since(s0, s1))
        if cs is not None:
            drain["redis_cmds"] = cs
            drain["redis_cmds_per_task"] = round(sum(cs.values()) / max(1, len(seen)), 2)
        if seen:
            t_first, t_last = min(seen.values()), max(seen.values())
            drain["first_task_after_s"] = round(t_first - t_spawn, 3)
            drain["seconds"] = round(t_last - t_spawn, 3)
            if status == "ok":
                drain["tasks_per_s"] = round(n / (t_last - t_spawn), 1)
                if n > 1 and t_last > t_first:
                    drain["steady_tasks_per_s"] = round((n - 1) / (t_last - t_first), 1)
            else:
                drain["partial_tasks_per_s"] = round(len(seen) / (t_seen - t_spawn), 1)
        self.finish_worker(case, w, env, drain, wlog)
        if status != "ok":
            drain["worker_log_tail"] = tail(wlog)
        return enq, drain

    def run_mixed(self, case, queue):
        a, n = self.a, self.a.n
        done, resf, plog, wlog = self.phase_files(case, "mixed")
        self.reset(case)
        env = self.env(case, queue, done, resf)
        out = {}
        # worker first; prove it is consuming with one warm-up task (number n, not counted)
        w = self.spawn(case, "work", env, wlog)
        t_w = time.monotonic()
        wenv = self.env(case, queue, done, resf + ".warmup", n=1, first=n)
        wr = self.run_producer(case, wenv, plog, resf + ".warmup", t_w + a.timeout)
        warm = "pending"
        while time.monotonic() < t_w + a.timeout and wr.get("status") == "ok":
            seen, _, _ = read_done(done, 1, n)
            if seen:
                warm = "ok"
                break
            if w.poll() is not None:
                break
            time.sleep(0.01)
        out["worker_ready_after_s"] = round(time.monotonic() - t_w, 3)
        if warm != "ok":
            out["status"] = "worker not ready (warm-up task not run): producer=%s worker_rc=%s" % (
                wr.get("status"), w.poll())
            out["worker_log_tail"] = tail(wlog)
            out["producer_log_tail"] = tail(plog)
            stop_group(w)
            return out
        if case[4] in REDIS_BACKED:
            self.redis.admin("CONFIG", "RESETSTAT")
        s0 = self.server_cpu(case)
        meter = Meter(self.servers, group=w.pid)
        t_spawn = time.monotonic()
        deadline = t_spawn + a.timeout
        p = self.spawn(case, "produce", env, plog)
        status, seen, total = self.wait_done(done, n, 0, deadline, self.watch(w))
        t_seen = time.monotonic()
        s1 = self.server_cpu(case)
        cs = self.cmdstats(case)
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop_group(p)
        out["machine"] = meter.stop()
        prod = {}
        if os.path.exists(resf):
            with open(resf) as f:
                prod = json.load(f)
        out["status"] = status
        out["completed"] = len(seen)
        out["duplicates"] = total - len(seen)
        out.update(cpu_since(s0, s1))
        if cs is not None:
            out["redis_cmds"] = cs
            out["redis_cmds_per_task"] = round(sum(cs.values()) / max(1, len(seen)), 2)
        if prod:
            out["producer"] = {k: prod[k] for k in ("enqueued", "errors", "first_error", "seconds", "mode",
                                                    "producer_cpu_s")}
            out["producer"]["tasks_per_s"] = round(prod["enqueued"] / prod["seconds"], 1) if prod["seconds"] else None
        else:
            out["producer"] = {"status": "no result (rc=%s)" % p.returncode, "log_tail": tail(plog)}
        if seen and prod:
            t0 = prod["t_first_enqueue"]
            t_last = max(seen.values())
            out["seconds"] = round(t_last - t0, 3)
            out["last_done_after_last_enqueue_s"] = round(t_last - prod["t_last_enqueue"], 3)
            if status == "ok":
                out["tasks_per_s"] = round(n / (t_last - t0), 1)
            else:
                out["partial_tasks_per_s"] = round(len(seen) / (t_seen - t0), 1)
        elif status != "ok":
            out["partial_tasks_per_s"] = round(len(seen) / (t_seen - t_spawn), 1)
        self.finish_worker(case, w, env, out, wlog)
        if status != "ok":
            out["worker_log_tail"] = tail(wlog)
        return out

    def run_case(self, case, rep):
        name = case[0]
        base = re.sub(r"[^a-z0-9]", "_", name.lower())
        q_split = "bq_%s_%d_split" % (base, rep)
        q_mixed = "bq_%s_%d_mixed" % (base, rep)
        try:
            enq, drain = self.run_split(case, q_split)
        except Exception as e:  # keep the run going
            enq, drain = {"status": "error: %r" % e}, {"status": "error: %r" % e}
        try:
            mixed = self.run_mixed(case, q_mixed)
        except Exception as e:
            mixed = {"status": "error: %r" % e}
        out = {"enqueue": enq, "drain": drain, "mixed": mixed}
        if case[4] == "codeq":
            self.stop_codeq()
            out["codeq_serve"], self.codeq_stops = self.codeq_stops, []
        return out


# ----------------------------------------------------------------------------- report

METRICS = [("enqueue", "tasks_per_s"), ("drain", "tasks_per_s"), ("drain", "steady_tasks_per_s"),
           ("mixed", "tasks_per_s")]


def summarize(runs):
    s = {"runs": len(runs)}
    for ph, key in METRICS:
        vals = [r[ph].get(key) for r in runs if r[ph].get(key) is not None]
        ok = len(vals) == len(runs) and vals
        s["%s_%s" % (ph, key)] = round(statistics.median(vals), 1) if ok else None
        s["%s_%s_min" % (ph, key)] = min(vals) if ok else None
        s["%s_%s_max" % (ph, key)] = max(vals) if ok else None
    for ph in ("drain", "mixed"):
        vals = [r[ph].get("redis_cmds_per_task") for r in runs if r[ph].get("redis_cmds_per_task") is not None]
        s["%s_redis_cmds_per_task" % ph] = statistics.median(vals) if vals else None
    problems = []
    for i, r in enumerate(runs):
        for ph in ("enqueue", "drain", "mixed"):
            st = r[ph].get("status")
            if st != "ok":
                extra = ""
                if "completed" in r[ph]:
                    extra = " (%d/%s done" % (r[ph]["completed"], "N")
                    if r[ph].get("partial_tasks_per_s") is not None:
                        extra += ", %.0f tasks/s" % r[ph]["partial_tasks_per_s"]
                    extra += ")"
                problems.append("run%d %s: %s%s" % (i + 1, ph, st, extra))
            bl = r[ph].get("backlog_after") or {}
            if ph != "enqueue" and st == "ok" and isinstance(bl.get("unfinished"), int) and bl["unfinished"] != 0:
                problems.append("run%d %s: %d left unfinished/unacked" % (i + 1, ph, bl["unfinished"]))
            if r[ph].get("duplicates"):
                problems.append("run%d %s: %d duplicate executions" % (i + 1, ph, r[ph]["duplicates"]))
            if r[ph].get("note"):
                problems.append("run%d %s: %s" % (i + 1, ph, r[ph]["note"]))
    s["problems"] = problems
    s["all_ok"] = not problems
    shares = [r[ph]["machine"]["foreign_share"] for r in runs for ph in ("enqueue", "drain", "mixed")
              if (r[ph].get("machine") or {}).get("foreign_share") is not None]
    s["max_foreign_cpu_share"] = max(shares) if shares else None
    s["contended"] = [
        "run%d %s: other processes used %.0f%% of the machine's CPU" % (i + 1, ph, 100 * r[ph]["machine"]["foreign_share"])
        for i, r in enumerate(runs) for ph in ("enqueue", "drain", "mixed")
        if (r[ph].get("machine") or {}).get("foreign_share") is not None
        and r[ph]["machine"]["foreign_share"] > CONTENDED]
    return s


def fmt(v):
    return "-" if v is None else ("%.0f" % v)


def cell(s, key):
    """median, plus [min-max] when the case ran more than once."""
    v = s.get(key)
    if v is None or s.get("runs", 1) < 2:
        return fmt(v)
    return "%s [%s-%s]" % (fmt(v), fmt(s.get(key + "_min")), fmt(s.get(key + "_max")))


def table(doc):
    lines = []
    m = doc["meta"]
    lines.append("codeQ peer benchmark: N=%s tasks, %s, %s, %s CPUs, Redis %s (AOF everysec), beanstalkd %s"
                 % (m.get("n"), m.get("started_at"), m.get("python"), m.get("cpus"), m.get("redis_version"),
                    m.get("beanstalkd_version")))
    hdr = ("case", "enqueue/s", "drain/s", "drain steady/s", "mixed e2e/s", "cmds/task", "bg cpu", "check")
    rows = []
    for c in doc["cases"]:
        s = c["summary"]
        cmds = s.get("drain_redis_cmds_per_task")
        rows.append((c["name"], cell(s, "enqueue_tasks_per_s"), cell(s, "drain_tasks_per_s"),
                     cell(s, "drain_steady_tasks_per_s"), cell(s, "mixed_tasks_per_s"),
                     "-" if cmds is None else "%.1f" % cmds,
                     "-" if s.get("max_foreign_cpu_share") is None else "%.0f%%" % (100 * s["max_foreign_cpu_share"]),
                     "ok" if s["all_ok"] else "SEE NOTES"))
    w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    line = lambda r: "  ".join(str(x).ljust(w[i]) if i == 0 else str(x).rjust(w[i]) for i, x in enumerate(r))
    lines.append(line(hdr))
    lines.append("  ".join("-" * x for x in w))
    for r in rows:
        lines.append(line(r))
    lim = doc.get("limits") or {}
    if lim:
        lines.append("")
        lines.append("limits (same redis-server):")
        lines.append("  redis-benchmark -P %s, 50 clients: LPUSH %s/s, RPOP %s/s, EVALSHA(RPOP+HSET) %s/s"
                     % (lim.get("pipeline"), fmt(lim.get("lpush_rps")), fmt(lim.get("rpop_rps")),
                        fmt(lim.get("evalsha_rpop_hset_rps"))))
        for c in doc["cases"]:
            if c["name"] == "raw-redis-floor":
                s = c["summary"]
                lines.append("  raw redis-py asyncio floor (pipelines of 100): enqueue %s/s, drain %s/s, mixed %s/s"
                             % (fmt(s["enqueue_tasks_per_s"]), fmt(s["drain_tasks_per_s"]),
                                fmt(s["mixed_tasks_per_s"])))
    notes = [(c["name"], p) for c in doc["cases"] for p in c["summary"]["problems"] + c["summary"]["contended"]]
    if notes:
        lines.append("")
        lines.append("notes:")
        for name, p in notes:
            lines.append("  %s: %s" % (name, p))
    lines.append("")
    if any(c["summary"].get("runs", 1) > 1 for c in doc["cases"]):
        lines.append("cells: median [min-max] over the runs of a case.")
    lines.append("drain/s counts from worker process spawn (imports included); steady = first to last task.")
    lines.append("cmds/task = Redis commands (incl. those inside Lua scripts) per task during drain.")
    lines.append("bg cpu = largest share of the machine's CPU used by processes this benchmark did not start,")
    lines.append("         over the case's phases (>%.0f%% is listed under notes as contended)." % (100 * CONTENDED))
    lines.append("total %.0f s (setup %.0f s, benchmark %.0f s)" % (m.get("total_seconds") or 0,
                                                                   m.get("setup_seconds") or 0,
                                                                   m.get("bench_seconds") or 0))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="tasks per phase (default 20000)")
    ap.add_argument("--timeout", type=float, default=180.0, help="time limit per phase, seconds (default 180)")
    ap.add_argument("--cases", default="", help="comma-separated case names or prefixes (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the table shows medians")
    ap.add_argument("--producer-concurrency", type=int, default=50,
                    help="in-flight enqueues for the asyncio producers (default 50)")
    ap.add_argument("--venv-root", default="/tmp/codeq-peers-venv")
    ap.add_argument("--out", default="", help="folder for results.json, table.txt and logs")
    ap.add_argument("--skip-limits", action="store_true")
    ap.add_argument("--keep-data", action="store_true", help="keep the temp dir with server data and logs")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness increment for the benchmark and all it starts (negative needs root); "
                         "e.g. -10 on a host shared with other jobs (default 0)")
    a = ap.parse_args()
    if a.nice:
        os.nice(a.nice)

    if a.list:
        for c in CASES:
            print(c[0])
        return 0
    sel = CASES
    if a.cases:
        want = [w.strip() for w in a.cases.split(",") if w.strip()]
        sel = [c for c in CASES if any(c[0] == w or c[0].startswith(w) for w in want)]
        if not sel:
            ap.error("no case matches %r (see --list)" % a.cases)

    t_start = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    out_dir = a.out or os.path.join(tempfile.gettempdir(), "codeq-peers-out",
                                    time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="codeq-peers-")
    need_redis = any(c[4] in REDIS_BACKED for c in sel) or not a.skip_limits
    need_bs = any(c[4] == "beanstalk" for c in sel)
    redis = beanstalk = runner = None
    doc = {"meta": {"n": a.n, "started_at": started}, "servers": {}, "limits": None, "cases": []}

    def on_signal(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if need_redis:
            redis = RedisServer(workdir)
            log("redis-server %s pid %d on 127.0.0.1:%d (AOF everysec, no RDB), data %s"
                % (redis.version, redis.pid, redis.port, redis.dir))
            doc["servers"]["redis"] = {"version": redis.version, "port": redis.port, "pid": redis.pid,
                                       "argv": ["redis-server"] + redis.argv[1:]}
        if need_bs:
            beanstalk = BeanstalkServer(workdir)
            log("beanstalkd %s pid %d on 127.0.0.1:%d, binlog %s" % (beanstalk.version, beanstalk.pid,
                                                                    beanstalk.port, beanstalk.dir))
            doc["servers"]["beanstalkd"] = {"version": beanstalk.version, "port": beanstalk.port,
                                            "pid": beanstalk.pid, "argv": ["beanstalkd"] + beanstalk.argv[1:],
                                            "fsync": "at most every 50 ms (beanstalkd 1.12 default with -b)"}
        doc["meta"].update({
            "n": a.n, "timeout_per_phase_s": a.timeout, "repeat": a.repeat,
            "producer_concurrency_async": a.producer_concurrency, "nice": os.nice(0),
            "started_at": started, "python": "Python " + platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "redis_version": redis.version if redis else None,
            "beanstalkd_version": beanstalk.version if beanstalk else None,
            "payload": '{"i": <n>, "pad": "x" * 64}',
        })
        if not a.skip_limits:
            log("limits: redis-benchmark ...")
            try:
                doc["limits"] = run_limits(redis)
            except Exception as e:
                doc["limits"] = {"error": repr(e)}
            log("limits: %s" % {k: v for k, v in doc["limits"].items() if k.endswith("rps")})
        runner = Runner(a, workdir, redis, beanstalk)
        for case in sel:
            name = case[0]
            entry = {"name": name, "peer": case[1].replace("_peer", ""), "variant": case[3], "server": case[4]}
            try:
                entry.update(runner.call(case, "describe", runner.env(case, "x", "/dev/null", "/dev/null"),
                                         timeout=120))
            except Exception as e:
                entry["describe_error"] = repr(e)[-800:]
            runs = []
            for rep in range(a.repeat):
                log("%s: run %d/%d ..." % (name, rep + 1, a.repeat))
                t0 = time.monotonic()
                r = runner.run_case(case, rep)
                r["seconds"] = round(time.monotonic() - t0, 1)
                runs.append(r)
                log("%s: enqueue %s/s, drain %s/s (steady %s/s), mixed %s/s  [%s / %s / %s] %.0fs" % (
                    name, fmt(r["enqueue"].get("tasks_per_s")), fmt(r["drain"].get("tasks_per_s")),
                    fmt(r["drain"].get("steady_tasks_per_s")), fmt(r["mixed"].get("tasks_per_s")),
                    r["enqueue"].get("status"), r["drain"].get("status"), r["mixed"].get("status"),
                    r["seconds"]))
                if rep + 1 < a.repeat and any(r[ph].get("status") == "timeout" for ph in ("enqueue", "drain", "mixed")):
                    entry["repeats_skipped"] = "a phase hit the time limit; %d further run(s) skipped" % (
                        a.repeat - rep - 1)
                    log("%s: %s" % (name, entry["repeats_skipped"]))
                    break
            entry["runs"] = runs
            entry["summary"] = summarize(runs)
            doc["cases"].append(entry)
    except KeyboardInterrupt:
        log("interrupted")
        doc["meta"]["interrupted"] = True
    finally:
        if runner:
            runner.stop_codeq()
        if redis:
            redis.stop()
        if beanstalk:
            beanstalk.stop()
        if a.keep_data:
            log("kept %s" % workdir)
        else:
            logs = os.path.join(out_dir, "logs")
            os.makedirs(logs, exist_ok=True)
            for fn in os.listdir(workdir):
                if fn.endswith(".log"):
                    shutil.copy(os.path.join(workdir, fn), logs)
            shutil.rmtree(workdir, ignore_errors=True)
    bench_s = time.monotonic() - t_start
    doc["meta"]["bench_seconds"] = round(bench_s, 1)
    t0_env = os.environ.get("CODEQ_PEERS_T0")
    doc["meta"]["total_seconds"] = round(time.time() - float(t0_env), 1) if t0_env else round(bench_s, 1)
    doc["meta"]["setup_seconds"] = round(doc["meta"]["total_seconds"] - bench_s, 1) if t0_env else 0.0
    doc["meta"]["finished_at"] = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    doc["meta"]["out_dir"] = out_dir
    text = table(doc)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(out_dir, "table.txt"), "w") as f:
        f.write(text + "\n")
    print(json.dumps(doc, indent=1))
    sys.stdout.flush()
    sys.stderr.write("\n" + text + "\n")
    sys.stderr.write("results: %s/results.json, table: %s/table.txt\n" % (out_dir, out_dir))
    return 0 if all(c["summary"]["all_ok"] for c in doc["cases"]) and not doc["meta"].get("interrupted") else 1


if __name__ == "__main__":
    sys.exit(main())
