#!/usr/bin/env python3
"""Runs one QEMU boot of an emulated Raspberry Pi for scripts/pi-emu.sh.

The guest's serial console is QEMU's stdio: every line goes to the log
file, and a line `@@XP <addr>` is a request to read one 32-bit word of the
machine's physical memory through QEMU's own monitor (QMP, `xp`), not
through the guest: the host answers `@@= 0x<value>` on the guest's serial
input. The boot ends when the guest prints `@@END`, when QEMU exits, or
after the timeout (then the exit code is 3).

`@@TRACE on` starts QEMU's trace of every write to a device register
(`memory_region_ops_write`, into QEMU's log, LOG with `.trace` for
`.serial`; the boot passes `-D` and `-d trace:memory_region_ops_write`,
which this turns off as soon as it is connected); `@@TRACE off NAME PIN
LEVEL` stops it. Once QEMU has exited (its log is buffered), the writes to
the BCM283x GPIO block are judged: from the moment PIN becomes an output,
it must never be latched at another level than LEVEL (no glitch at start).
The verdict is written to LOG as the guest's own `@@PASS`/`@@FAIL NAME: …`
lines are; the guest is answered `@@= done` at once. One traced window per
boot.

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


WRITE = re.compile(r"memory_region_ops_write .*addr 0x([0-9a-f]+) value 0x([0-9a-f]+) size \d+ name '([^']*)'")
GPSET0, GPCLR0 = 0x1C, 0x28


def judge_start(trace_text, name, pin, want):
    """The verdict on a traced start: PIN's level from the moment it is an output."""
    fsel_reg, shift = (pin // 10) * 4, (pin % 10) * 3
    # QEMU resets the latch to 0; the guest checks the pin reads 0 before.
    function, latched, steps, glitch = None, 0, [], None
    for found in WRITE.finditer(trace_text):
        # The address is the region's own plus its offset in its container:
        # the register is the offset in the 4 KiB block.
        addr, value, region = int(found.group(1), 16) & 0xFFF, int(found.group(2), 16), found.group(3)
        if "gpio" not in region:
            continue
        if addr == fsel_reg:
            new = (value >> shift) & 7
            if new != function:
                steps.append(f"function {new}")
            function = new
        elif addr == GPSET0 and value >> pin & 1:
            latched = 1
            steps.append("set")
        elif addr == GPCLR0 and value >> pin & 1:
            latched = 0
            steps.append("clear")
        else:
            continue
        if function == 1 and latched != want and glitch is None:
            glitch = len(steps)
    seen = ", ".join(steps) or "no write to GPIO%d" % pin
    if function != 1:
        return f"@@FAIL {name}: GPIO{pin} never became an output in the trace ({seen})"
    if glitch is not None:
        return f"@@FAIL {name}: GPIO{pin} was an output at the wrong level at step {glitch} ({seen})"
    return f"@@PASS {name}: GPIO{pin}'s register writes while pinpost started, traced by QEMU: {seen}; never an output at a level but {want}"


def tracing(stream, on):
    state = "on" if on else "off"
    qmp_call(stream, "human-monitor-command", **{"command-line": f"trace-event memory_region_ops_write {state}"})


def judge_trace(log, trace_path, judged):
    """Writes the verdict on the traced window, if one was asked for."""
    if not judged:
        return
    name, pin, want = judged
    try:
        with open(trace_path, "r", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        log.write(f"\n@@FAIL {name}: cannot read QEMU's trace {trace_path}: {e}\n".encode())
        return
    log.write(f"\n{judge_start(text, name, pin, want)}\n".encode())


def main():
    log_path, timeout, qemu = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    trace_path = os.path.splitext(log_path)[0] + ".trace"
    judged = None
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
            # The boot's own writes are not what is judged.
            tracing(stream, False)
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
                    elif "@@TRACE " in line:
                        words = line[line.find("@@TRACE "):].split()
                        tracing(stream, words[1:2] == ["on"])
                        if len(words) == 5:
                            judged = (words[2], int(words[3]), int(words[4]))
                        proc.stdin.write(b"@@= done\n")
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
            judge_trace(log, trace_path, judged)
            log.write(b"\n@@HOST %.1f s from power on to off\n" % (time.monotonic() - started))
    sys.exit(code)


if __name__ == "__main__":
    main()
