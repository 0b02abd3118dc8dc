"""Which jobs have a "run job <id>" message in the broker right now, waiting or taken.

The reaper re-publishes a queued job only when no message for it exists, instead of guessing
from queue lengths (a message that a worker has taken but not yet claimed is not in the
queue, yet it is not lost). Redis: the queue's lists (every priority) plus kombu's ``unacked``
hash, where a message stays from the moment a worker takes it until it is acknowledged
(late acks: after the task). Filesystem transport: the message files of the queue.

On Redis the messages are read by a script inside Redis (``_FIND``), which sends back only
job ids: the ids asked about that have no message, or every id found. A reaper asking about a
backlog of thousands of waiting jobs moves a few bytes per job, not each whole message. The
script reads a message's job id from its ``argsrepr`` header (``['<id>']``), which both
publishers (``send_task`` and ``publish_run_jobs``) set, since Redis's Lua cannot decode
the base64 body.
"""
from __future__ import annotations

import base64
import json
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

import redis

from drtrain.kit.broker import RUN_JOB_TASK, is_filesystem
from drtrain.kit.settings import Settings

log = logging.getLogger(__name__)

# kombu's Redis transport: priority lists are "<queue>\x06\x16<n>", taken messages wait for
# their ack in this hash.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
UNACKED_KEY = "unacked"


def job_id_of(message: dict[str, Any]) -> str | None:
    """The job id a kombu message asks to run, or None for anything else."""
    headers = message.get("headers") or {}
    if headers.get("task") not in (None, RUN_JOB_TASK):
        return None
    try:
        body = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (KeyError, IndexError, TypeError, ValueError):
        return None


# KEYS: the queue's lists, then the unacked hash. ARGV[1]: the queue, ARGV[2]: the task name,
# ARGV[3]: "missing" (answer the ids of ARGV[4..] that have no message) or "all" (answer
# every job id found). Lists are read in pages so a long queue never sits in one reply.
_FIND = """
local queue, task, mode = ARGV[1], ARGV[2], ARGV[3]
local wanted, found, out = {}, {}, {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local function note(message)
  if type(message) ~= 'table' or type(message.headers) ~= 'table' then return end
  local h = message.headers
  if h.task ~= nil and h.task ~= cjson.null and h.task ~= task then return end
  if type(h.argsrepr) ~= 'string' then return end
  local id = string.match(h.argsrepr, [=[^%[['"](%x+)['"]%]$]=])
  if id ~= nil and found[id] == nil then
    found[id] = true
    if mode == 'all' then out[#out + 1] = id end
  end
end
local function decode(raw)
  local ok, value = pcall(cjson.decode, raw)
  if ok then return value end
  return nil
end
for k = 1, #KEYS - 1 do
  local start = 0
  while true do
    local page = redis.call('LRANGE', KEYS[k], start, start + 499)
    for _, raw in ipairs(page) do note(decode(raw)) end
    if #page < 500 then break end
    start = start + 500
  end
end
local cursor = '0'
repeat
  local reply = redis.call('HSCAN', KEYS[#KEYS], cursor, 'COUNT', 500)
  cursor = reply[1]
  for i = 2, #reply[2], 2 do
    local payload = decode(reply[2][i])
    if type(payload) == 'table' and (payload[3] == nil or payload[3] == cjson.null
                                     or payload[3] == queue) then
      note(payload[1])
    end
  end
until cursor == '0'
if mode == 'missing' then
  for id, _ in pairs(wanted) do
    if found[id] == nil then out[#out + 1] = id end
  end
end
return out
"""


def _find_in_redis(url: str, queue: str, mode: str, wanted: Collection[str] = ()) -> set[str]:
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    try:
        keys = [queue, *(f"{queue}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS), UNACKED_KEY]
        reply = client.register_script(_FIND)(keys=keys,
                                              args=[queue, RUN_JOB_TASK, mode, *wanted])
    finally:
        client.close()
    return {item.decode() if isinstance(item, bytes) else str(item) for item in reply}


def _from_folder(folder: Path, queue: str) -> set[str]:
    found: set[str] = set()
    for path in folder.glob(f"*.{queue}.msg"):
        try:
            job_id = job_id_of(json.loads(path.read_bytes()))
        except (OSError, ValueError):
            continue  # taken by a worker meanwhile, or not a message
        if job_id is not None:
            found.add(job_id)
    return found


def job_ids_in_broker(settings: Settings, *, queue: str) -> set[str] | None:
    """Ids of the jobs with a message in ``queue`` (waiting or taken); None when the broker
    cannot be asked (unreachable, or a transport this function does not know)."""
    try:
        if is_filesystem(settings):
            return _from_folder(settings.broker_folder / "queue", queue)
        url = settings.resolved_broker_url
        if url.startswith(("redis://", "rediss://")):
            return _find_in_redis(url, queue, "all")
    except (OSError, ValueError, redis.RedisError) as exc:
        log.warning("broker messages unavailable: %s", type(exc).__name__)
    return None


def missing_from_broker(settings: Settings, *, queue: str,
                        wanted: Collection[str]) -> set[str] | None:
    """Of the jobs ``wanted``, those with no message in ``queue`` (waiting or taken); None
    when the broker cannot be asked. On Redis only those ids travel back."""
    if not wanted:
        return set()
    try:
        if is_filesystem(settings):
            return set(wanted) - _from_folder(settings.broker_folder / "queue", queue)
        url = settings.resolved_broker_url
        if url.startswith(("redis://", "rediss://")):
            return _find_in_redis(url, queue, "missing", wanted)
    except (OSError, ValueError, redis.RedisError) as exc:
        log.warning("broker messages unavailable: %s", type(exc).__name__)
    return None
