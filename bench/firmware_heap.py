"""Calibrates the heap of the MicroPython unix port (64-bit) against a 32-bit
MicroPython (the WebAssembly port, whose pointers and GC blocks are the ESP32's
size): the same workload, the firmware precompiled with mpy-cross, measured with
gc.mem_alloc() around each step in both.

    .venv/bin/python bench/firmware_heap.py

Needs `micropython` and `mpy-cross` (dev dependencies) and node with
`npm ci --prefix tests/firmware/micropython`. Figures go to firmware/README.md.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from iotp.simulator.mpy import build_firmware, micropython_command

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "firmware" / "micropython"

# The firmware's modules as the device imports them at boot, then the objects it
# makes: a booted Device with its MQTT client and 20 queued reports, and a sample of
# the object shapes it allocates at run time.
WORKLOAD = r"""
import gc
gc.collect(); a0 = gc.mem_alloc()
from iotfw.device import Device
from iotfw import jsonx
gc.collect(); a1 = gc.mem_alloc()
class Hal:
    network_static = True
    def __init__(self):
        self.files = {"config.json": jsonx.dumps({"interval": 0.5, "mqtt_host": "127.0.0.1",
                      "mqtt_port": 9, "wifi_ssid": "x"}).encode()}
    def read_file(self, p): return self.files.get(p)
    def write_file(self, p, d): self.files[p] = bytes(d)
    def mac(self): return b"\x02\x00\x00\x00\x00\x01"
    def setup(self, cfg): pass
    def sensors(self): return ("temperature", "humidity", "gas")
    def read_climate(self): return 21.5, 40.0
    def read_gas(self): return 100
    def set_relay(self, n, on): pass
    def set_servo(self, a): pass
    def time(self): return 1764230400.0
    def ip(self): return "10.0.0.2"
    def rssi(self): return -60
    def log(self, m): pass
d = Device(Hal())
d.boot()
d._start_mqtt()
for t in d._tasks: t.cancel()
for i in range(20): d.tick()
gc.collect(); a2 = gc.mem_alloc()
keep = [({"temperature": 21.5 + i, "humidity": 40.0, "gas": i, "seq": i}, [i, "t", b"p", False],
         "devices/%012d/data" % i, i + 0.5) for i in range(200)]
gc.collect(); a3 = gc.mem_alloc()
print("RESULT %d %d %d" % (a1 - a0, a2 - a1, a3 - a2))
"""

NODE_RUNNER = r"""
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
const [buildDir, script] = process.argv.slice(2);
const mp = await loadMicroPython({ heapsize: 1024 * 1024, stdout: (l) => console.log(l) });
mp.FS.mkdir("/b"); mp.FS.mkdir("/b/iotfw");
for (const n of readdirSync(join(buildDir, "iotfw")))
  mp.FS.writeFile("/b/iotfw/" + n, readFileSync(join(buildDir, "iotfw", n)));
await mp.runPythonAsync('import sys\nsys.path.insert(0, "/b")\n' + readFileSync(script, "utf8"));
"""


def _result(out: str) -> tuple[int, int, int]:
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    a, b, c = (int(v) for v in line.split()[1:])
    return a, b, c


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        build = build_firmware(Path(tmp) / "build")
        script = Path(tmp) / "workload.py"
        script.write_text(WORKLOAD)
        unix = subprocess.run(
            [micropython_command(), "-X", "heapsize=1M", str(script)],
            env={"MICROPYPATH": f"{build}:.frozen"},
            capture_output=True,
            text=True,
            check=True,
        )
        runner = RUNNER / "heap_runner.mjs"
        runner.write_text(NODE_RUNNER)
        try:
            wasm = subprocess.run(
                ["node", str(runner), str(build), str(script)],
                cwd=RUNNER,
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            runner.unlink()
    u, w = _result(unix.stdout), _result(wasm.stdout)
    names = ("modules (bytecode, qstrs)", "booted device + 20 reports", "200 run-time objects")
    print(f"{'bytes':28} {'unix 64-bit':>12} {'32-bit':>8} {'ratio':>6}")
    for name, a, b in zip(names, u, w, strict=True):
        print(f"{name:28} {a:12d} {b:8d} {a / b:6.2f}")
    total_u, total_w = u[0] + u[1], w[0] + w[1]
    print(f"{'boot (modules + device)':28} {total_u:12d} {total_w:8d} {total_u / total_w:6.2f}")


if __name__ == "__main__":
    main()
