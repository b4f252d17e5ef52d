"""The explain plugin's HTTP endpoint (``register_routes``, served by ``lccore serve``): ``POST /v1/explain``."""

# No `from __future__ import annotations`: FastAPI reads the route annotations.
from typing import Any, Optional

from lccore import LccoreError
from lccore.errors import close_matches


def add_routes(server) -> None:
    from fastapi import HTTPException
    from pydantic import BaseModel, Field

    class ExplainRequest(BaseModel):
        inputs: list[Any] = Field(description="strings, or JSON objects the run's task reads")
        model: Optional[str] = Field(None, description="the run's name (GET /v1/models); optional when one run is served")
        explainer: str = Field("shap", description="shap, integrated_gradients, attention, random, or a plugin's")
        target: Optional[str] = Field(None, description="the class (or entity) to explain; default: the predicted one")
        options: dict[str, Any] = Field(default_factory=dict, description="explainer options, e.g. {\"n_steps\": 32}")

    class ExplainResponse(BaseModel):
        model: str
        outputs: list[Any] = Field(description="attribution records: one per input and explained target")

    @server.router.post("/v1/explain", response_model=ExplainResponse)
    async def explain(body: ExplainRequest):
        """Attribution records from a registered explainer (the `explain` plugin's)."""
        until = server.deadline()
        name = server.pick(body.model)
        predictor = server.predictors[name]
        explainers = predictor.engine.names("explainer") if predictor.engine is not None else []
        if body.explainer not in explainers:
            known = ", ".join(explainers) or "none: install the explain plugin"
            raise HTTPException(404, f"explainer: unknown explainer '{body.explainer}'{close_matches(body.explainer, explainers)}; registered: {known}")
        examples = server.parse(name, body.inputs)
        if predictor.guard:  # an input the policies block is not explained either
            refused = await server.timed(server.in_helper_thread(lambda: server.blocked(name, examples), until), until)
            if refused:
                raise HTTPException(403, refused)
        options = dict(body.options)
        if body.target is not None:
            server.check_size(body.target, "target")
            options["target"] = body.target
        try:  # options are checked here, on the event loop: a bad one never waits for the model thread
            predictor.engine.create("explainer", body.explainer, options, key=f"explainer.{body.explainer}")
            explaining = server.in_model_thread(name, predictor.explain, list(body.inputs), body.explainer, until=until, **options)
            outputs = await server.timed(explaining, until)
        except LccoreError as exc:  # a bad option or target: the user's to fix
            raise HTTPException(422, str(exc)) from None
        return {"model": name, "outputs": outputs}
