"""The capability index on a Weaviate server (weaviate-client v4), for an index matchers share.

Install with ``pip install 'aos-gateway[weaviate]'`` and point ``AOS_WEAVIATE__URL`` at the
server (``AOS_WEAVIATE__GRPC_PORT``, ``AOS_WEAVIATE__API_KEY``, ``AOS_WEAVIATE__COLLECTION``).
Agents are objects of one collection with a self-provided named vector ``text`` (HNSW, cosine)
and filterable properties for every field :class:`TaskConstraints` reads; the card itself is
stored as JSON, unindexed.

**Tested only where a server runs**: no Weaviate server can run on this project's machines, so
the index contract tests run against this backend only when ``AOS_WEAVIATE__URL`` is set and
are skipped (with that reason) otherwise. What runs everywhere is the translation of the
constraints into Weaviate filters and the error for an unreachable server.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aos_gateway.contracts.records import AgentCard
from aos_gateway.errors import ConfigError, IndexBackendError, MissingExtraError
from aos_gateway.matching.filters import USABLE, TaskConstraints
from aos_gateway.matching.index import Hit, IndexedAgent, check_queries, check_vector, next_version
from aos_gateway.perception.vectors import FloatArray

if TYPE_CHECKING:
    from aos_gateway.settings import WeaviateSettings

VECTOR = "text"
_NAMESPACE = uuid.UUID("8f4b7a52-2d43-4c55-9a38-6c0b0e7f3a11")
_RETURN = ["card", "version"]


def _weaviate() -> Any:
    try:
        import weaviate
    except ImportError:
        raise MissingExtraError("weaviate-client", "weaviate") from None
    return weaviate


def object_id(agent_id: str) -> str:
    """The Weaviate object id of an agent (the same UUID the qdrant backend uses)."""
    return str(uuid.uuid5(_NAMESPACE, agent_id))


def to_weaviate_filter(cons: TaskConstraints) -> Any:
    """The constraints as a Weaviate filter (the same rules as ``TaskConstraints.allows``)."""
    _weaviate()
    from weaviate.classes.query import Filter

    parts = [
        Filter.any_of([Filter.by_property("status").equal(s) for s in USABLE]),
        Filter.any_of([Filter.by_property("tenant").equal(t) for t in cons.tenants]),
    ]
    if cons.required_capabilities:
        parts.append(Filter.by_property("capabilities").contains_all(sorted(cons.required_capabilities)))
    if cons.required_modalities:
        parts.append(Filter.by_property("modalities").contains_all(sorted(cons.required_modalities)))
    if cons.max_cost is not None:
        parts.append(Filter.by_property("cost").less_or_equal(float(cons.max_cost)))
    if cons.max_latency_ms is not None:
        parts.append(Filter.by_property("p95_latency_ms").less_or_equal(int(cons.max_latency_ms)))
    return Filter.all_of(parts)


def _properties(card: AgentCard, version: int) -> dict[str, Any]:
    return {
        "agent_id": card["agent_id"],
        "version": version,
        "card": json.dumps(card, separators=(",", ":")),
        "tenant": card["tenant"],
        "status": card["status"],
        "capabilities": list(card["capabilities"]),
        "modalities": list(card["modalities"]),
        "cost": float(card["cost"]),
        "p95_latency_ms": int(card["p95_latency_ms"]),
    }


def _agent(props: Any) -> IndexedAgent:
    card: AgentCard = json.loads(props["card"])
    return IndexedAgent(card=card, version=int(props["version"]))


class WeaviateIndex:
    """Agents as objects of a Weaviate collection; HNSW and filters run on the server."""

    def __init__(self, client: Any, collection: str, dim: int, m: int = 16, ef_construct: int = 100, ef: int = 64):
        self.dim = dim
        self._client = client
        self._lock = threading.Lock()
        try:
            if not client.collections.exists(collection):
                self._create(collection, m, ef_construct, ef)
            self._col = client.collections.get(collection)
        except Exception as exc:
            raise IndexBackendError(f"Weaviate collection {collection!r}: {exc}") from exc

    @classmethod
    def connect(
        cls, settings: WeaviateSettings, dim: int, m: int = 16, ef_construct: int = 100, ef: int = 64
    ) -> WeaviateIndex:
        """Connect to ``settings.url`` (HTTP) and its gRPC port; an unreachable server is an IndexBackendError."""
        if not settings.url:
            raise ConfigError("the weaviate index backend needs AOS_WEAVIATE__URL")
        url = urlsplit(settings.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"AOS_WEAVIATE__URL must be http(s)://host[:port], got {settings.url!r}")
        weaviate = _weaviate()
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        secure = url.scheme == "https"
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        try:
            client = weaviate.connect_to_custom(
                http_host=url.hostname,
                http_port=url.port or (443 if secure else 80),
                http_secure=secure,
                grpc_host=url.hostname,
                grpc_port=settings.grpc_port,
                grpc_secure=secure,
                auth_credentials=Auth.api_key(key) if key else None,
                additional_config=AdditionalConfig(
                    timeout=Timeout(init=settings.timeout_s, query=settings.timeout_s, insert=settings.timeout_s)
                ),
            )
        except Exception as exc:
            raise IndexBackendError(f"cannot reach Weaviate at {settings.url}: {exc}") from exc
        try:
            return cls(client, settings.collection, dim, m, ef_construct, ef)
        except BaseException:
            client.close()
            raise

    def _create(self, name: str, m: int, ef_construct: int, ef: int) -> None:
        from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances

        def keyword(prop: str, array: bool = False) -> Any:
            return Property(
                name=prop,
                data_type=DataType.TEXT_ARRAY if array else DataType.TEXT,
                tokenization=Tokenization.FIELD,
                index_filterable=True,
                index_searchable=False,
            )

        self._client.collections.create(
            name,
            properties=[
                keyword("agent_id"),
                Property(name="version", data_type=DataType.INT, index_filterable=False),
                Property(
                    name="card",
                    data_type=DataType.TEXT,
                    index_filterable=False,
                    index_searchable=False,
                    skip_vectorization=True,
                ),
                keyword("tenant"),
                keyword("status"),
                keyword("capabilities", array=True),
                keyword("modalities", array=True),
                Property(name="cost", data_type=DataType.NUMBER, index_range_filters=True),
                Property(name="p95_latency_ms", data_type=DataType.INT, index_range_filters=True),
            ],
            vector_config=Configure.Vectors.self_provided(
                name=VECTOR,
                vector_index_config=Configure.VectorIndex.hnsw(
                    distance_metric=VectorDistances.COSINE, max_connections=m, ef_construction=ef_construct, ef=ef
                ),
            ),
        )

    def __len__(self) -> int:
        try:
            return int(self._col.aggregate.over_all(total_count=True).total_count or 0)
        except Exception as exc:
            raise IndexBackendError(f"Weaviate count failed: {exc}") from exc

    def _get(self, agent_id: str) -> IndexedAgent | None:
        try:
            obj = self._col.query.fetch_object_by_id(object_id(agent_id), return_properties=_RETURN)
        except Exception as exc:
            raise IndexBackendError(f"Weaviate fetch failed: {exc}") from exc
        return None if obj is None else _agent(obj.properties)

    def get(self, agent_id: str) -> IndexedAgent | None:
        return self._get(agent_id)

    def upsert(self, card: AgentCard, vector: FloatArray) -> IndexedAgent:
        vec = check_vector(vector, self.dim).tolist()
        with self._lock:
            old = self._get(card["agent_id"])
            entry = IndexedAgent(card=card, version=next_version(old, card))
            props = _properties(card, entry.version)
            oid = object_id(card["agent_id"])
            try:
                if old is None:
                    self._col.data.insert(properties=props, uuid=oid, vector={VECTOR: vec})
                else:
                    self._col.data.replace(uuid=oid, properties=props, vector={VECTOR: vec})
            except Exception as exc:
                raise IndexBackendError(f"Weaviate write failed: {exc}") from exc
            return entry

    def remove(self, agent_id: str) -> bool:
        with self._lock:
            try:
                return bool(self._col.data.delete_by_id(object_id(agent_id)))
            except Exception as exc:
                raise IndexBackendError(f"Weaviate delete failed: {exc}") from exc

    def agents(self) -> list[IndexedAgent]:
        try:
            return [_agent(o.properties) for o in self._col.iterator(return_properties=_RETURN)]
        except Exception as exc:
            raise IndexBackendError(f"Weaviate iteration failed: {exc}") from exc

    def search(self, queries: FloatArray, k: int, constraints: TaskConstraints | None = None) -> list[list[Hit]]:
        from weaviate.classes.query import MetadataQuery

        q = check_queries(queries, k, self.dim)
        flt = to_weaviate_filter(constraints) if constraints is not None else None
        out: list[list[Hit]] = []
        for row in q:
            try:
                res = self._col.query.near_vector(
                    near_vector=row.tolist(),
                    target_vector=VECTOR,
                    limit=k,
                    filters=flt,
                    return_properties=_RETURN,
                    return_metadata=MetadataQuery(distance=True),
                )
            except Exception as exc:
                raise IndexBackendError(f"Weaviate search failed: {exc}") from exc
            # cosine distance = 1 - cosine similarity
            out.append(
                [Hit(agent=_agent(o.properties), similarity=1.0 - float(o.metadata.distance)) for o in res.objects]
            )
        return out

    def drop(self) -> None:
        """Delete the whole collection (tests use a collection of their own)."""
        try:
            self._client.collections.delete(self._col.name)
        except Exception as exc:
            raise IndexBackendError(f"Weaviate delete of {self._col.name!r} failed: {exc}") from exc

    def close(self) -> None:
        self._client.close()
