"""Built-in firmware plugin: the ``arduino`` backend (a sketch for the Nano 33 BLE Sense).

Registers :class:`kwscompress_arduino.sketch.ArduinoBackend`; its templates are the package
``kwscompress.firmware_templates`` (the ``firmware_templates/`` folder).
"""

from __future__ import annotations

from kwscompress import hookimpl
from kwscompress_arduino.sketch import ArduinoBackend


@hookimpl
def kws_register_backends() -> list[ArduinoBackend]:
    """The ``arduino`` backend."""
    return [ArduinoBackend()]
