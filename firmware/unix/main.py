# Entry point of a simulated device on the MicroPython unix port:
#
#   cd <device dir> && MICROPYPATH=<firmware>:<firmware>/unix micropython -X heapsize=N \
#       <firmware>/unix/main.py <mac hex> [portal port] [gas leaks per hour]
#
# The working directory is the device's flash. boot.py picks the OTA slot first,
# as on the ESP32. stdin takes one command a line: "stop" (clean shutdown),
# "crash" (power cut: no goodbye, the broker sends the last will), "leak" (a gas
# leak in the room), "mem" (prints the heap). The process ends with RESET_EXIT
# when the device resets (the parent starts it again) and 0 after "stop".
import sys

import boot  # selects the OTA slot before iotfw is imported

import asyncio
import binascii
import gc

import unixhal

if boot.restart:
    # boot installed an update: this port has no machine.reset(), the parent starts
    # the process again
    sys.exit(unixhal.RESET_EXIT)


async def _control(device, hal):
    stdin = asyncio.StreamReader(sys.stdin)
    while True:
        line = (await stdin.readline()).strip()
        if line == b"crash":
            device.crash()
        elif line == b"leak":
            hal.room.leak(hal.room.last, 800.0, 60.0)
        elif line == b"mem":
            gc.collect()
            hal.log("mem free %d alloc %d" % (gc.mem_free(), gc.mem_alloc()))
        elif line == b"stop" or not line:
            await device.shutdown()
            return


async def _watchdog(device, hal):
    while True:
        await asyncio.sleep(1)
        if hal.wdt_expired():
            hal.log("watchdog reset")
            device.crash()
            return


async def _run(device, hal):
    control = asyncio.create_task(_control(device, hal))
    wdt = asyncio.create_task(_watchdog(device, hal))
    try:
        return await device.run()
    finally:
        control.cancel()
        wdt.cancel()


def main():
    mac = binascii.unhexlify(sys.argv[1])
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 80
    leaks = float(sys.argv[3]) if len(sys.argv) > 3 else unixhal.GAS_EVENTS_PER_HOUR
    hal = unixhal.Hal(mac, portal_port=port, gas_events_per_hour=leaks)
    try:
        from iotfw.device import Device

        device = Device(hal)
        gc.collect()
        hal.log("mem boot free %d alloc %d" % (gc.mem_free(), gc.mem_alloc()))
        reason = asyncio.run(_run(device, hal))
    except Exception as exc:  # noqa: BLE001 - a broken firmware resets, as on the chip
        sys.print_exception(exc)
        reason = "error"
    hal.log("reset " + str(reason))
    sys.exit(0 if reason == "shutdown" else unixhal.RESET_EXIT)


main()
