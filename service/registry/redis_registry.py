"""A registry in Redis: artifact bytes live in Redis (chunked), so replicas need no shared disk.

Keys under `PREFIX` (one prefix per fleet or test):
  `P:models`                      set of model names
  `P:m:<name>:seq`                last version number handed out (never reused, even after gc)
  `P:m:<name>:versions`           zset version -> version
  `P:m:<name>:v:<n>`              hash: manifest (raw manifest.json), published_at, digest, chunks (json)
  `P:m:<name>:v:<n>:c:<file>:<i>` chunk i of one artifact file (CHUNK_BYTES each)
  `P:m:<name>:aliases`            hash alias -> version
  `P:m:<name>:history`            list of AliasMove JSON
  `P:m:<name>:canary_share`       float string
  `P:events`                      stream of alias moves (replicas XREAD BLOCK on it)
  `P:generation`                  counter bumped by every move (replicas poll it; streams alone can be missed)

Publish writes chunks under `P:staging:<uuid>:…` (with a TTL, so a publisher that dies leaves nothing that
lasts), reads them back and checks every sha256, then one Lua script renames them into place and makes the
version exist. Alias moves and deletions are Lua compare-and-set scripts, atomic on the server.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from service.artifact import MANIFEST_NAME, ArtifactError, Manifest, verify_artifact
from service.registry.base import (
    AliasMove,
    ConflictError,
    Event,
    EventStream,
    IntegrityError,
    ModelVersion,
    NotFoundError,
    Registry,
    RegistryError,
    UnavailableError,
    check_alias,
    check_share,
    utcnow,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024
STAGING_TTL_SECONDS = 3600
STREAM_MAXLEN = 10_000
T = TypeVar("T")

# KEYS: versions zset, seq, models set. ARGV: prefix, name, staging id, manifest, published_at, digest,
# chunks json ({file: n}). Checks everything before the first write (Lua does not roll back) and never
# writes over an existing version.
_COMMIT = """
local p, name, sid = ARGV[1], ARGV[2], ARGV[3]
local chunks = cjson.decode(ARGV[7])
for file, n in pairs(chunks) do
  for i = 0, n - 1 do
    if redis.call('EXISTS', p .. ':staging:' .. sid .. ':' .. file .. ':' .. i) == 0 then
      return {-2, file .. ':' .. i}
    end
  end
end
local v = redis.call('INCR', KEYS[2])
local vk = p .. ':m:' .. name .. ':v:' .. v
if redis.call('EXISTS', vk) == 1 then return {-3, v} end
for file, n in pairs(chunks) do
  for i = 0, n - 1 do
    local dst = vk .. ':c:' .. file .. ':' .. i
    redis.call('RENAME', p .. ':staging:' .. sid .. ':' .. file .. ':' .. i, dst)
    redis.call('PERSIST', dst)
  end
end
redis.call('HSET', vk, 'manifest', ARGV[4], 'published_at', ARGV[5], 'digest', ARGV[6], 'chunks', ARGV[7])
redis.call('ZADD', KEYS[1], v, v)
redis.call('SADD', KEYS[3], name)
return {v, ''}
"""

# KEYS: aliases, history, events stream, generation, versions zset.
# ARGV: alias, new version ('' = remove), expected ('' = must not exist), move json, name, at, stream maxlen.
_SET_ALIAS = """
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[3] then return {0, cur} end
if ARGV[2] ~= '' and not redis.call('ZSCORE', KEYS[5], ARGV[2]) then return {-1, ARGV[2]} end
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('RPUSH', KEYS[2], ARGV[4])
local gen = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'kind', 'alias', 'model', ARGV[5], 'alias', ARGV[1],
  'from', ARGV[3], 'to', ARGV[2], 'generation', gen, 'at', ARGV[6])
return {1, gen}
"""

# KEYS: aliases, versions zset, version hash. ARGV: version. Refuses if any alias points at it.
_DELETE_VERSION = """
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  if v == ARGV[1] then return 0 end
end
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local chunks = cjson.decode(redis.call('HGET', KEYS[3], 'chunks'))
for file, n in pairs(chunks) do
  for i = 0, n - 1 do redis.call('UNLINK', KEYS[3] .. ':c:' .. file .. ':' .. i) end
end
redis.call('UNLINK', KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: share key, events, generation. ARGV: share, name, at, maxlen.
_SET_SHARE = """
redis.call('SET', KEYS[1], ARGV[1])
local gen = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'kind', 'canary_share', 'model', ARGV[2],
  'share', ARGV[1], 'generation', gen, 'at', ARGV[3])
return gen
"""

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def _retry_reads(fn: Callable[..., T]) -> Callable[..., T]:
    """Reads are idempotent: retry a dropped connection a few times with backoff before giving up."""
    return retry(
        retry=retry_if_exception_type(_TRANSIENT),
        wait=wait_exponential(multiplier=0.05, max=1.0),
        stop=stop_after_attempt(4) | stop_after_delay(3.0),
        reraise=True,
    )(fn)


class RedisRegistry(Registry):
    def __init__(
        self,
        url: str,
        prefix: str = "qipo",
        *,
        socket_timeout: float = 5.0,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        if not prefix.strip(":* "):
            raise RegistryError(f"redis key prefix {prefix!r} is empty; pass --prefix NAME")
        self.url = url
        self.prefix = prefix.rstrip(":")
        self.chunk_bytes = chunk_bytes
        self.client: redis.Redis[bytes] = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=min(socket_timeout, 2.0),
            health_check_interval=10,
            client_name=f"qipo:{self.prefix}",  # CLIENT LIST shows which fleet a connection serves
        )
        self._commit = self.client.register_script(_COMMIT)
        self._set_alias = self.client.register_script(_SET_ALIAS)
        self._delete = self.client.register_script(_DELETE_VERSION)
        self._set_share = self.client.register_script(_SET_SHARE)

    def __repr__(self) -> str:
        return f"RedisRegistry({self.url!r}, prefix={self.prefix!r})"

    # keys -----------------------------------------------------------------------------------------------
    def _k(self, name: str, *parts: str | int) -> str:
        return ":".join([self.prefix, "m", name, *map(str, parts)])

    @property
    def events_key(self) -> str:
        return f"{self.prefix}:events"

    @property
    def generation_key(self) -> str:
        return f"{self.prefix}:generation"

    # connection -----------------------------------------------------------------------------------------
    def _unavailable(self, exc: Exception) -> UnavailableError:
        return UnavailableError(
            f"cannot reach Redis at {self.url} ({type(exc).__name__}: {exc}); check that redis-server is "
            "running and reachable (scripts/redis-up.sh starts a local one)"
        )

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one Redis operation; connection failures become UnavailableError with a readable reason."""
        try:
            return fn()
        except _TRANSIENT as exc:
            raise self._unavailable(exc) from exc
        except RedisError as exc:
            raise RegistryError(f"Redis at {self.url} refused the operation: {exc}") from exc

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except (RedisError, OSError):
            return False

    def wait_until_reachable(self, timeout: float = 30.0) -> None:
        """Start-up: retry with exponential backoff until Redis answers or `timeout` passes."""

        @retry(
            retry=retry_if_exception_type(_TRANSIENT),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            stop=stop_after_delay(timeout),
            reraise=True,
        )
        def _ping() -> None:
            self.client.ping()

        self._call(_ping)

    # versions -------------------------------------------------------------------------------------------
    def publish(self, artifact_dir: Path, *, force: bool = False) -> ModelVersion:
        artifact_dir = Path(artifact_dir)
        try:
            manifest = verify_artifact(artifact_dir)
        except ArtifactError as exc:
            raise RegistryError(f"refusing to publish: {exc}") from exc
        if not force:
            self.check_shape(manifest)
        manifest_bytes = (artifact_dir / MANIFEST_NAME).read_bytes()
        digest = hashlib.sha256(manifest_bytes).hexdigest()
        sid = uuid.uuid4().hex
        staging = f"{self.prefix}:staging:{sid}"
        chunks: dict[str, int] = {}

        def stage() -> None:
            for fname in manifest.files:
                data = (artifact_dir / fname).read_bytes()
                pieces = list(_split(data, self.chunk_bytes))
                chunks[fname] = len(pieces)
                pipe = self.client.pipeline(transaction=False)
                for i, piece in enumerate(pieces):
                    pipe.set(f"{staging}:{fname}:{i}", piece, ex=STAGING_TTL_SECONDS)
                pipe.execute()
            for fname, entry in manifest.files.items():  # read back: what commits is what was verified
                stored = b"".join(self._chunks(f"{staging}:{fname}", chunks[fname]))
                if len(stored) != entry.size or hashlib.sha256(stored).hexdigest() != entry.sha256:
                    raise IntegrityError(f"staged copy of {fname} does not match its manifest; publish again")

        try:
            self._call(stage)
            keys = [self._k(manifest.name, "versions"), self._k(manifest.name, "seq")]
            keys.append(f"{self.prefix}:models")
            args = [self.prefix, manifest.name, sid, manifest_bytes, utcnow(), digest, json.dumps(chunks)]
            code, detail = self._call(lambda: self._commit(keys=keys, args=args))
        finally:
            self._call(lambda: self._drop_staging(staging, chunks))
        if code == -3:
            raise ConflictError(
                f"{manifest.name} version {_s(detail)} already exists and versions are immutable; nothing "
                "was overwritten. The version counter was behind (restored backup?); publish again"
            )
        if code < 0:
            raise RegistryError(f"publish of {manifest.name} was not committed ({code}: {_s(detail)}); retry")
        return self.get(manifest.name, int(code))

    def _drop_staging(self, staging: str, chunks: dict[str, int]) -> None:
        keys = [f"{staging}:{f}:{i}" for f, n in chunks.items() for i in range(n)]
        if keys:
            self.client.unlink(*keys)

    def _file_body(self, base: str, n: int) -> bytes:
        """One file's chunks joined (each retry of `_call` reads them all again)."""
        return b"".join(self._chunks(base, n))

    def _chunks(self, base: str, n: int) -> Iterator[bytes]:
        for start in range(0, n, 64):
            values = self.client.mget([f"{base}:{i}" for i in range(start, min(n, start + 64))])
            for i, value in enumerate(values, start):
                if value is None:
                    raise IntegrityError(f"chunk {i} of {base} is missing; the version is damaged")
                yield bytes(value)

    @_retry_reads
    def _models(self) -> list[str]:
        return sorted(_s(m) for m in self.client.smembers(f"{self.prefix}:models"))

    def models(self) -> list[str]:
        return self._call(self._models)

    @_retry_reads
    def _versions(self, name: str) -> list[int]:
        return [int(v) for v in self.client.zrange(self._k(name, "versions"), 0, -1)]

    def versions(self, name: str) -> list[ModelVersion]:
        return [self.get(name, v) for v in self._call(lambda: self._versions(name))]

    @_retry_reads
    def _version_hash(self, name: str, version: int) -> dict[bytes, bytes]:
        return self.client.hgetall(self._k(name, "v", version))

    def get(self, name: str, version: int) -> ModelVersion:
        data = self._call(lambda: self._version_hash(name, version))
        if not data:
            raise NotFoundError(f"model {name!r} has no version {version} in {self}")
        return ModelVersion(
            name=name,
            version=version,
            manifest=Manifest.model_validate_json(data[b"manifest"]),
            published_at=_s(data[b"published_at"]),
        )

    # aliases --------------------------------------------------------------------------------------------
    @_retry_reads
    def _aliases(self, name: str) -> dict[bytes, bytes]:
        return self.client.hgetall(self._k(name, "aliases"))

    def aliases(self, name: str) -> dict[str, int]:
        return {_s(k): int(v) for k, v in self._call(lambda: self._aliases(name)).items()}

    def set_alias(
        self, name: str, alias: str, version: int | None, *, expected: int | None = None, reason: str = ""
    ) -> AliasMove:
        check_alias(alias)
        move = AliasMove(name=name, alias=alias, from_version=expected, to_version=version, reason=reason)
        keys = [self._k(name, "aliases"), self._k(name, "history"), self.events_key, self.generation_key]
        keys.append(self._k(name, "versions"))
        args = [
            alias,
            "" if version is None else str(version),
            "" if expected is None else str(expected),
            move.model_dump_json(),
            name,
            move.at,
            STREAM_MAXLEN,
        ]
        code, detail = self._call(lambda: self._set_alias(keys=keys, args=args))
        if code == 0:
            current = _s(detail) or None
            raise ConflictError(
                f"alias {alias!r} of {name!r} points at {current}, not {expected}: someone moved it first; "
                "re-read with `qipo registry list` and retry"
            )
        if code == -1:
            raise NotFoundError(f"model {name!r} has no version {version} in {self}; publish it first")
        return move

    @_retry_reads
    def _history(self, name: str) -> list[bytes]:
        return self.client.lrange(self._k(name, "history"), 0, -1)

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        moves = [AliasMove.model_validate_json(raw) for raw in self._call(lambda: self._history(name))]
        return [m for m in moves if alias is None or m.alias == alias]

    # bytes ----------------------------------------------------------------------------------------------
    def pull(self, name: str, version: int, dest: Path) -> Path:
        data = self._call(lambda: self._version_hash(name, version))
        if not data:
            raise NotFoundError(f"model {name!r} has no version {version} in {self}")
        manifest = Manifest.model_validate_json(data[b"manifest"])
        chunks: dict[str, int] = json.loads(data[b"chunks"])
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for fname, entry in manifest.files.items():
            base = self._k(name, "v", version, "c", fname)
            body = self._call(functools.partial(self._file_body, base, chunks[fname]))
            got = hashlib.sha256(body).hexdigest()
            if len(body) != entry.size or got != entry.sha256:
                raise IntegrityError(
                    f"{name} version {version}: {fname} from Redis has sha256 {got[:12]}… ({len(body)} "
                    f"bytes), manifest says {entry.sha256[:12]}… ({entry.size} bytes): the stored bytes are "
                    "corrupted or tampered with; not loaded. Publish the artifact again as a new version"
                )
            (dest / fname).write_bytes(body)
        (dest / MANIFEST_NAME).write_bytes(data[b"manifest"])
        try:
            verify_artifact(dest)
        except ArtifactError as exc:
            raise IntegrityError(f"{name} version {version} failed verification on pull: {exc}") from exc
        return dest

    # notification, canary, gc ---------------------------------------------------------------------------
    @_retry_reads
    def _generation(self) -> int:
        return int(self.client.get(self.generation_key) or 0)

    def generation(self) -> int:
        return self._call(self._generation)

    def event_stream(self) -> EventStream:
        return self

    def read_events(self, last_id: str, block_ms: int) -> list[Event]:
        """Alias moves after `last_id` ('$' = from now), waiting up to `block_ms`; raises UnavailableError."""

        def read() -> Any:
            return self.client.xread({self.events_key: last_id}, block=block_ms, count=100)

        out: list[Event] = []
        for _stream, entries in self._call(read) or []:
            for entry_id, fields in entries:
                out.append((_s(entry_id), {_s(k): _s(v) for k, v in fields.items()}))
        return out

    def last_event_id(self) -> str:
        def last() -> Any:
            return self.client.xrevrange(self.events_key, count=1)

        entries = self._call(last)
        return _s(entries[0][0]) if entries else "0-0"

    @_retry_reads
    def _share(self, name: str) -> float:
        return float(self.client.get(self._k(name, "canary_share")) or 0.0)

    def canary_share(self, name: str) -> float:
        return self._call(lambda: self._share(name))

    def set_canary_share(self, name: str, share: float) -> None:
        check_share(share)
        keys = [self._k(name, "canary_share"), self.events_key, self.generation_key]
        self._call(lambda: self._set_share(keys=keys, args=[repr(share), name, utcnow(), STREAM_MAXLEN]))

    def _delete_version(self, name: str, version: int) -> bool:
        keys = [self._k(name, "aliases"), self._k(name, "versions"), self._k(name, "v", version)]
        return bool(self._call(lambda: self._delete(keys=keys, args=[version])))

    def delete_prefix(self) -> int:
        """Remove every key under this prefix (tests and `qipo registry destroy`-style clean-up)."""

        def run() -> int:
            keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=1000))
            for start in range(0, len(keys), 500):
                self.client.unlink(*keys[start : start + 500])
            return len(keys)

        return self._call(run)

    def close(self) -> None:
        self.client.close()


def _split(data: bytes, size: int) -> Iterator[bytes]:
    if not data:
        yield b""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)
