# Device entry point (runs after boot.py).
import asyncio

from iotfw.device import Device
from iotfw.hal import Hal


def main():
    device = Device(Hal())
    asyncio.run(device.run())


main()
