#!/usr/bin/env python3
"""AES-256-GCM throughput of the OpenSSL that recovault's core links, next to the core's own figure.

The target is: the core reaches >= 0.95x what the linked OpenSSL reaches by itself. `cryptography`'s AESGCM
is no yardstick for that, as its wheels ship their own (often newer, faster) OpenSSL.

    .venv/bin/python bench/openssl_speed.py [--bytes 1048576] [--seconds 2] [--repeat 3]

Runs `openssl speed -evp aes-256-gcm -bytes N -seconds S` (encryption) and a timed loop of
core.aes_gcm_encrypt on the same buffer size, alternately, `--repeat` times, and prints the best of each
(the best is the least disturbed by other load) and their ratio. Checks that the `openssl` command uses the
same libcrypto as the core and says so if not.

Two clocks: `openssl speed` divides by CPU *user* time unless given `-elapsed`. On a shared machine that
makes it look faster than any wall-clock measurement, so the fair comparison is CPU time against CPU time
(the core's loop is timed with this thread's CPU time, user + system, which is slightly conservative for
it). The wall-clock pair (`-elapsed` vs perf_counter) is printed too; on an idle machine both agree.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time


def linked_libcrypto(path):
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    # the wheel's core links its own copy, renamed by auditwheel: recovault.libs/libcrypto-<hash>.so.3
    m = re.search(r"libcrypto(-[0-9a-f]+)?\.so[^\s]*\s+=>\s+(\S+)", out)
    return os.path.realpath(m.group(2)) if m else None


def openssl_speed(nbytes, seconds, elapsed=False):
    cmd = ["openssl", "speed"] + (["-elapsed"] if elapsed else []) + [
        "-evp", "aes-256-gcm", "-bytes", str(nbytes), "-seconds", str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    # last line: "AES-256-GCM    3037593.60k" (1000s of bytes per second)
    for line in reversed(out.splitlines()):
        m = re.match(r"\s*aes-256-gcm\s+([\d.]+)k\s*$", line, re.IGNORECASE)
        if m:
            return float(m.group(1)) * 1000.0
    raise RuntimeError("cannot parse `openssl speed` output:\n" + out)


def core_speed(nbytes, seconds, cpu_clock):
    """Bytes per second of core.aes_gcm_encrypt, by this thread's CPU time or by wall-clock time."""
    from recovault import core

    clock = time.thread_time if cpu_clock else time.perf_counter
    key, nonce, pt = os.urandom(32), os.urandom(12), os.urandom(nbytes)
    for _ in range(20):  # warm up: page-in the output buffers, thread-local context
        core.aes_gcm_encrypt(key, nonce, pt)
    n, t0 = 0, clock()
    deadline = t0 + seconds
    while True:
        core.aes_gcm_encrypt(key, nonce, pt)
        n += 1
        t = clock()
        if t >= deadline:
            break
    return n * nbytes / (t - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bytes", type=int, default=1 << 20)
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()

    if not shutil.which("openssl"):
        sys.exit("the `openssl` command is not installed (apt-get install openssl)")
    from recovault import _core

    ours = linked_libcrypto(_core.__file__)
    theirs = linked_libcrypto(shutil.which("openssl"))
    version = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    print(f"openssl command: {version}")
    print(f"libcrypto linked by recovault._core: {ours}")
    print(f"libcrypto used by the openssl command: {theirs}")
    if ours and os.path.basename(os.path.dirname(ours)) == "recovault.libs":
        print("  (the wheel's copy of the build machine's libcrypto: the same code when built on this machine)")
    elif ours and theirs and ours != theirs:
        print("WARNING: not the same libcrypto: the comparison below is not the target comparison")

    best = {"ssl_cpu": 0.0, "core_cpu": 0.0, "ssl_wall": 0.0, "core_wall": 0.0}
    for i in range(a.repeat):
        r = {
            "ssl_cpu": openssl_speed(a.bytes, a.seconds),
            "core_cpu": core_speed(a.bytes, a.seconds, cpu_clock=True),
            "ssl_wall": openssl_speed(a.bytes, a.seconds, elapsed=True),
            "core_wall": core_speed(a.bytes, a.seconds, cpu_clock=False),
        }
        for k, v in r.items():
            best[k] = max(best[k], v)
        print(f"  run {i + 1}: CPU time: openssl {r['ssl_cpu'] / 1e6:8.1f} MB/s, core {r['core_cpu'] / 1e6:8.1f} MB/s"
              f" | wall: openssl {r['ssl_wall'] / 1e6:8.1f} MB/s, core {r['core_wall'] / 1e6:8.1f} MB/s")
    print(f"AES-256-GCM encrypt, {a.bytes} bytes per call, best of {a.repeat} runs of {a.seconds} s:")
    for clock, s_key, c_key in (("CPU time", "ssl_cpu", "core_cpu"), ("wall clock", "ssl_wall", "core_wall")):
        ratio = best[c_key] / best[s_key]
        print(f"  {clock:10s}: linked OpenSSL {best[s_key] / 1e6:8.1f} MB/s, recovault core "
              f"{best[c_key] / 1e6:8.1f} MB/s, ratio {ratio:.3f} (target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")
    print("Numbers are noisy on a shared machine (the CPU-time pair is the fairer one there); "
          "rerun on an idle machine before drawing conclusions.")


if __name__ == "__main__":
    main()
