#!/usr/bin/env python3
"""Runs one QEMU boot of an emulated Raspberry Pi for scripts/pi-emu.sh.

The guest's serial console is QEMU's stdio: every line goes to the log
file, and a line `@@XP <addr>` is a request to read one 32-bit word of the
machine's physical memory through QEMU's own monitor (QMP, `xp`), not
through the guest: the host answers `@@= 0x<value>` on the guest's serial
input. The boot ends when the guest prints `@@END`, when QEMU exits, or
after the timeout (then the exit code is 3).

    drive.py LOG TIMEOUT_SECONDS QEMU ARGS...
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time


def qmp_connect(path, deadline):
    while True:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    stream = sock.makefile("rw", encoding="utf-8", newline="\n")
    json.loads(stream.readline())  # the greeting
    qmp_call(stream, "qmp_capabilities")
    return sock, stream


def qmp_call(stream, command, **arguments):
    stream.write(json.dumps({"execute": command, "arguments": arguments}) + "\n")
    stream.flush()
    while True:
        answer = json.loads(stream.readline())
        if "return" in answer or "error" in answer:
            return answer  # events ("event": ...) are skipped


def xp(stream, addr):
    answer = qmp_call(stream, "human-monitor-command", **{"command-line": f"xp /1wx {addr}"})
    text = answer.get("return", "")
    # "000000003f200034: 0x00400000"
    found = re.search(r":\s*(0x[0-9a-fA-F]+)", text)
    return found.group(1) if found else "ERROR " + json.dumps(answer)


def main():
    log_path, timeout, qemu = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    tmp = tempfile.mkdtemp(prefix="pi-emu-")
    qmp_path = os.path.join(tmp, "qmp.sock")
    started = time.monotonic()
    deadline = started + timeout
    proc = subprocess.Popen(
        qemu + ["-qmp", f"unix:{qmp_path},server=on,wait=off", "-serial", "stdio"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    code = 0
    sock = None
    with open(log_path, "wb") as log:
        try:
            sock, stream = qmp_connect(qmp_path, started + 20)
            os.set_blocking(proc.stdout.fileno(), False)
            pending = b""
            while True:
                if time.monotonic() > deadline:
                    log.write(b"\n@@HOST timeout after %d s\n" % timeout)
                    code = 3
                    break
                if proc.poll() is not None:
                    chunk = proc.stdout.read() or b""
                    log.write(chunk)
                    break
                try:
                    chunk = proc.stdout.read(65536)
                except BlockingIOError:
                    chunk = None
                if not chunk:
                    time.sleep(0.01)
                    continue
                log.write(chunk)
                log.flush()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                ended = False
                for raw in lines:
                    line = raw.replace(b"\r", b"").decode("utf-8", "replace")
                    at = line.find("@@XP ")
                    if at >= 0:
                        value = xp(stream, line[at + 5:].strip())
                        proc.stdin.write(f"@@= {value}\n".encode())
                        proc.stdin.flush()
                    elif line.startswith("@@END"):
                        ended = True
                if ended:
                    break
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if sock:
                sock.close()
            try:
                os.unlink(qmp_path)
            except OSError:
                pass
            os.rmdir(tmp)
            log.write(b"\n@@HOST %.1f s from power on to off\n" % (time.monotonic() - started))
    sys.exit(code)


if __name__ == "__main__":
    main()
