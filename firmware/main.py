# Device entry point (runs after boot.py). A firmware that does not start (an OTA
# slot that fails to import) resets the chip, so boot.py counts the failed trial
# boot and rolls back instead of the device waiting at the REPL.
import asyncio
import sys
import time

import machine


def main():
    try:
        from iotfw.device import Device
        from iotfw.hal import Hal

        asyncio.run(Device(Hal()).run())
    except Exception as exc:  # noqa: BLE001 - anything here: start again
        sys.print_exception(exc)
        time.sleep(5)
    machine.reset()


main()
