"""kombu's filesystem transport (the embedded broker) with an atomic publish.

kombu creates a message file and then writes into it, while a consumer moves and reads
every ``*.<queue>.msg`` file it finds: polling often, a consumer can take a file that is
still empty, fail to decode it (the message is lost, the worker's consumer raises) and drop
it. Here the message is written under a name consumers skip and renamed into the queue
folder once complete; rename is atomic within a folder. Consumers are kombu's own.

Consumers take files in name order, so a name starts with the wall clock in microseconds,
zero-padded to a fixed width: kombu's unpadded millisecond clock sorted "1000000_" before
"999999_" once it gained a digit, and its monotonic clock restarts with the machine.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# 20 digits hold microseconds since 1970 for about three million years.
CLOCK_DIGITS = 20


def message_name(queue: str, now_us: int) -> str:
    """A queue file's name: its order among names is the order of ``now_us``."""
    return f"{now_us:0{CLOCK_DIGITS}d}_{uuid.uuid4()}.{queue}.msg"


def clock_us() -> int:
    return time.time_ns() // 1000


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = message_name(queue, clock_us())
        final = os.path.join(self.data_folder_out, name)
        # Starting with a dot, its part after the first dot is "<name>.tmp", never
        # "<queue>.msg": consumers skip it, and queue_depth counts only ".msg" files.
        partial = os.path.join(self.data_folder_out, f".{name}.tmp")
        try:
            with open(partial, "wb") as fh:
                fh.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
