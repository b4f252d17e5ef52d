"""``POST /v1/headline_match/rank`` on ``lccore serve``: the bodies that best match a headline,
ranked by the served run's probability of ``match``. Added through lccore's ``register_routes``
hook, so it is batched with the server's other requests, timed out, and guarded by the run's
ethics policies like the server's own endpoints."""

# No `from __future__ import annotations`: FastAPI reads the route annotations.
from typing import Optional


def add_routes(server) -> None:
    from fastapi import HTTPException
    from pydantic import BaseModel, Field

    class RankRequest(BaseModel):
        headline: str = Field(description="the headline")
        bodies: list[str] = Field(description="candidate article bodies")
        model: Optional[str] = Field(None, description="a served headline_match run; optional when one run is served")

    @server.router.post("/v1/headline_match/rank")
    async def rank(body: RankRequest):
        """The bodies, best match first, each with its index in the request and P(match)."""
        until = server.deadline()
        name = server.pick(body.model)
        if server.predictors[name].config.task.name != "headline_match":
            raise HTTPException(422, f"model: run '{name}' is not a headline_match run")
        pairs = server.parse(name, [{"headline": body.headline, "body": text} for text in body.bodies], field="bodies")
        records = await server.predict(name, pairs, until)
        ranking = []
        for index, record in enumerate(records):
            if record.get("refused"):
                raise HTTPException(403, f"bodies[{index}]: refused by the ethics policies: {'; '.join(record['reasons'])}")
            match = record["score"] if record["label"] == "match" else 1.0 - record["score"]
            ranking.append({"index": index, "body": body.bodies[index], "match": round(match, 6)})
        return {"model": name, "ranking": sorted(ranking, key=lambda item: -item["match"])}
