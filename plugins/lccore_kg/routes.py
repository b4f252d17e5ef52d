"""The kg plugin's HTTP endpoint (``register_routes``, served by ``lccore serve --kg STORE``):
``POST /v1/kg/query``, read-only SPARQL on the served store."""

# No `from __future__ import annotations`: FastAPI reads the route annotations.
from lccore import LccoreError, deadline


def add_routes(server) -> None:
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field

    class KGQueryRequest(BaseModel):
        query: str = Field(description="a SPARQL SELECT, ASK, CONSTRUCT or DESCRIBE query (updates are refused)")

    @server.router.post("/v1/kg/query", responses={200: {"content": {"application/sparql-results+json": {}, "application/ld+json": {}}}})
    async def kg_query(body: KGQueryRequest):
        """Read-only SPARQL on the served knowledge graph (`--kg STORE`): SPARQL 1.1 results JSON
        for SELECT and ASK, JSON-LD for CONSTRUCT and DESCRIBE, as `lccore kg query --json`. At most
        `--kg-max-rows` rows (or triples): an answer cut there has the header `Lccore-Truncated: true`."""
        until = server.deadline()
        store = server.kg
        if store is None:
            raise HTTPException(404, "no knowledge graph is served: start lccore serve with --kg STORE")
        server.check_size(body.query, "query")

        def query():
            # The store stops a query at its timeout (pyoxigraph cannot be interrupted from a
            # thread; the backend runs it where it can be killed).
            return store.query(body.query, timeout=max(deadline.remaining(), 0.001), max_rows=server.limits.kg_max_rows)

        try:
            # The store's query() parses first: an update, SERVICE, or a remote FROM is refused
            # before the store sees it (and the store is open read-only besides).
            result = await server.timed(server.in_helper_thread(query, until), until)
        except LccoreError as exc:
            raise HTTPException(400, _sparql_error(exc)) from None
        # SPARQL results JSON (SELECT, ASK) or JSON-LD (CONSTRUCT, DESCRIBE), as the store serialises them.
        media_type = "application/ld+json" if result["type"] == "graph" else "application/sparql-results+json"
        # an answer cut at --kg-max-rows says so in a header (SPARQL results JSON has no field for it)
        headers = {"Lccore-Truncated": "true"} if result.get("truncated") else None
        return JSONResponse(store.results_json(result), media_type=media_type, headers=headers)


def _sparql_error(exc: LccoreError) -> str:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "SPARQL update, not a query" in message:
        return "query: SPARQL updates (INSERT, DELETE, LOAD, CLEAR, CREATE, DROP, ...) are refused; this endpoint runs read-only SELECT, ASK, CONSTRUCT and DESCRIBE queries"
    return f"query: {message.replace(' (pass --allow-network)', '')}"
