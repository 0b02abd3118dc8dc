"""kombu's filesystem transport (the embedded broker) with an atomic publish.

kombu creates a message file and then writes into it, while a consumer moves and reads
every ``*.<queue>.msg`` file it finds: polling often, a consumer can take a file that is
still empty, fail to decode it (the message is lost, the worker's consumer raises) and drop
it. Here the message is written under a name consumers skip and renamed into the queue
folder once complete; rename is atomic within a folder. Consumers are kombu's own.
"""
from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # The same name as kombu's (ms timestamp first: consumers take files in name order).
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
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
