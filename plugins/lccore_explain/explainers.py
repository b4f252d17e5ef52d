"""The explainers: SHAP (Partition), integrated gradients, attention rollout and random.

Each one turns a :class:`~lccore_explain.subjects.Subject` into token scores per target; the
base class does the rest (parsing, prediction, word aggregation, cost) so that every explainer
returns the same :class:`~lccore_explain.record.Attribution` records.
"""

from __future__ import annotations

import contextlib
import time
import zlib

import attrs
import numpy as np
import torch

import lccore
from lccore import deadline

from . import faithfulness, html, record
from .subjects import Scorer, Subject, adapter_for, evaluation_mode, input_embeddings, token_at, trim


@attrs.frozen
class TargetResult:
    """Token scores for one target, on the token spans they refer to."""

    spans: list
    scores: list
    details: dict = attrs.Factory(dict)
    notes: tuple = ()


class Explainer:
    """``explain(predictor, texts) -> list[dict]``: one record per text and target (a text
    classifier: one per text; NER: one per predicted entity, or one empty record when there is none).

    ``render_html(records)`` and ``faithfulness(predictor, records)`` work on any records of this
    format, whichever explainer made them."""

    name = ""
    baseline = ""

    def __init__(self, options):
        self.options = options

    def explain(self, predictor, texts, *, progress: bool = False) -> list[dict]:
        if isinstance(texts, (str, dict)):
            texts = [texts]
        adapter = adapter_for(predictor)
        examples = [adapter.parse(value, f"text {i + 1}") for i, value in enumerate(texts)]
        predictions = predictor.predict_examples(examples)
        records = []
        # hundreds of model evaluations a text (shap, integrated gradients): minutes for a few dozen
        bar = lccore.progress_bar(total=len(examples), desc=f"explain {self.name}", unit="text", enabled=progress)
        with evaluation_mode(predictor.model), bar:
            for index, (example, prediction) in enumerate(zip(examples, predictions)):
                deadline.check()
                subject = adapter.subject(index, example, prediction, self.options.target)
                records += self.explain_subject(predictor, adapter, subject)
                bar.update(1)
        return [r.to_dict() for r in records]

    def explain_subject(self, predictor, adapter, subject: Subject) -> list[record.Attribution]:
        common = dict(text=subject.text, text_index=subject.index, task=adapter.name, words=subject.words, method=self.name, baseline=self.baseline,
                      pair_start=subject.pair_start)
        if not subject.targets:
            return [record.build(**common, target={}, prediction=subject.prediction, target_score=0.0, token_spans=subject.token_spans,
                                 token_scores=[0.0] * len(subject.token_spans), notes=subject.notes, cost={"model_evaluations": 0, "seconds": 0.0})]
        scorer = Scorer(predictor, subject)
        started = time.perf_counter()
        positions = [subject.position(t) for t in subject.targets]
        target_scores = scorer.probabilities([subject.input_ids], subject.targets, positions)[0].tolist()
        results = self.attribute(scorer, subject, positions, target_scores)
        cost = {"model_evaluations": scorer.evaluations, "gradient_evaluations": scorer.gradient_evaluations, "seconds": round(time.perf_counter() - started, 4)}
        if len(subject.targets) > 1:
            cost["shared_by_targets"] = len(subject.targets)
        return [
            record.build(
                **common, target=target.description, prediction=target.prediction, target_score=score, token_spans=result.spans,
                token_scores=result.scores, notes=[*self.notes(), *subject.notes, *result.notes], details=result.details, cost=cost,
            )
            for target, score, result in zip(subject.targets, target_scores, results)
        ]

    def attribute(self, scorer: Scorer, subject: Subject, positions: list, target_scores: list) -> list[TargetResult]:
        raise NotImplementedError

    def notes(self) -> list[str]:
        return []

    # --- format-level tools ------------------------------------------------------------------------

    def render_html(self, records: list[dict], title: str = "lccore explanation") -> str:
        return html.page(records, title=title)

    def faithfulness(self, predictor, records: list[dict]) -> dict:
        return faithfulness.evaluate(predictor, records)


# --- SHAP ----------------------------------------------------------------------------------------


class ShapExplainer(Explainer):
    """SHAP values from shap's Partition explainer over a Text masker.

    The masker hides tokens by replacing them with the mask token (special tokens stay), and the
    model function scores those token-id rows in batches. Values are Owen values over the
    masker's hierarchical token clustering; they sum to f(text) - f(all masked)."""

    name = "shap"
    baseline = "masked tokens replaced by the tokenizer's mask token (special tokens kept); base value f(all masked)"

    def attribute(self, scorer, subject, positions, target_scores):
        import shap

        tokenizer = scorer.predictor.tokenizer
        if subject.pair_start is not None:  # the masker splits the pair as the task does, on the subject's own tokens
            text, tokenizer, spans = subject.text, PairTokenizer(tokenizer, subject.pair_start, scorer.predictor.config.train.max_length), subject.token_spans
            encoded = tokenizer(text)
        else:
            seen = [span[1] for span in subject.token_spans if span is not None]
            text = subject.text[: max(seen)] if seen else ""  # the part within train.max_length
            encoded = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
            spans = [None if special else trim(span, text) for span, special in zip(encoded["offset_mapping"], encoded["special_tokens_mask"])]
        targets = subject.targets
        where = [token_at(t.char_start, spans) for t in targets]
        options = self.options

        def model_function(rows):
            return scorer.probabilities(np.asarray(rows, dtype=np.int64), targets, where, options.batch_size).numpy()

        maskable = [i for i, span in enumerate(spans) if span is not None]
        notes: tuple = ()
        if len(maskable) <= 1:
            # Partition SHAP cannot cluster a single token (shap#3515); with one feature the
            # Shapley value is exact and cheap: f(x) - f(masked).
            full = model_function([encoded["input_ids"]])[0]
            masked_ids = list(encoded["input_ids"])
            for i in maskable:
                masked_ids[i] = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
            base = model_function([masked_ids])[0]
            values = np.zeros((len(spans), len(targets)))
            for i in maskable:
                values[i] = full - base
            notes = (
                "one maskable token: exact Shapley value f(text) - f(masked) instead of the Partition explainer (shap#3515)"
                if maskable else "no token to attribute",
            )
        else:
            masker = shap.maskers.Text(tokenizer, output_type="token_ids")
            explainer = shap.Explainer(model_function, masker, algorithm="partition", output_names=[str(t.description.get("label")) for t in targets])
            explanation = explainer([text], max_evals=options.max_evals, batch_size=options.batch_size, silent=True)
            values, base = np.asarray(explanation.values[0]).reshape(len(spans), len(targets)), np.asarray(explanation.base_values[0]).reshape(-1)
            if values.shape[0] != len(spans):
                raise lccore.LccoreError(f"shap: the masker split the text into {values.shape[0]} tokens, the tokenizer into {len(spans)}")
        return [
            TargetResult(spans, values[:, j].tolist(), {"base_value": round(float(base[j]), 6), "max_evals": options.max_evals}, notes)
            for j in range(len(targets))
        ]


class PairTokenizer:
    """A text pair, held as one text (``first``, separator, ``second``), tokenised for shap's Text
    masker as the task tokenises the pair: ``tokenizer(first, second)`` with the offsets of the
    second text moved to where it starts. Anything else is the wrapped tokenizer's."""

    def __init__(self, tokenizer, pair_start: int, max_length: int):
        self.tokenizer, self.pair_start, self.max_length = tokenizer, pair_start, max_length

    def __call__(self, text, return_offsets_mapping=True, **kwargs):
        from .subjects import pair_encoding

        if len(text) < self.pair_start:  # shap probes the tokenizer with short strings of its own
            return self.tokenizer(text, return_offsets_mapping=return_offsets_mapping, **kwargs)
        first, second = text[: self.pair_start - len(record.PAIR_SEPARATOR)], text[self.pair_start :]
        encoded = pair_encoding(self.tokenizer, first, second, self.max_length)
        offsets = [
            (0, 0) if sequence is None else (start + (self.pair_start if sequence == 1 else 0), end + (self.pair_start if sequence == 1 else 0))
            for (start, end), sequence in zip(encoded["offset_mapping"], encoded.sequence_ids())
        ]
        out = {"input_ids": encoded["input_ids"], "special_tokens_mask": encoded["special_tokens_mask"]}
        if return_offsets_mapping:
            out["offset_mapping"] = offsets
        return out

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


# --- integrated gradients ------------------------------------------------------------------------


class IntegratedGradientsExplainer(Explainer):
    """Integrated gradients (Sundararajan et al., 2017) on the token-embedding layer.

    The path runs from the baseline (every non-special token's embedding replaced by the pad or
    mask token's; special tokens kept) to the input, integrated with Gauss-Legendre quadrature of
    ``n_steps`` points, evaluated ``internal_batch_size`` points at a time. Completeness: the
    attributions sum to f(input) - f(baseline); the difference is reported as the convergence
    delta."""

    name = "integrated_gradients"

    @property
    def baseline(self):
        return {"pad": "[PAD]", "mask": "[MASK]", "zero": "zero"}[self.options.baseline] + " embeddings at every non-special position (special tokens kept)"

    def attribute(self, scorer, subject, positions, target_scores):
        options = self.options
        layer = input_embeddings(scorer.model)
        ids = torch.tensor([subject.input_ids], device=scorer.device)
        replace = torch.tensor([span is not None for span in subject.token_spans], device=scorer.device)
        with torch.no_grad():
            embedded = layer(ids).detach().float()
            baseline_ids = ids.clone()
            token = self.baseline_token(scorer.predictor.tokenizer)
            if token is None:
                reference = torch.where(replace[None, :, None], torch.zeros_like(embedded), embedded)
            else:
                baseline_ids[0, replace] = token
                reference = layer(baseline_ids).detach().float()
        baseline_scores = self.path_scores(scorer, layer, ids, reference, subject.targets, positions)
        results = []
        for j, (target, position) in enumerate(zip(subject.targets, positions)):
            expected = target_scores[j] - baseline_scores[j]
            tolerance = max(0.01, 0.05 * abs(expected))
            # n_steps points first; while the sum misses f(input) - f(baseline) by more than the
            # tolerance, twice as many, up to max_n_steps (a steep path needs more points)
            steps = options.n_steps
            while True:
                scores = self.integrate(scorer, layer, ids, embedded, reference, target, position, steps)
                delta = float(scores.sum()) - expected
                if abs(delta) <= tolerance or steps >= options.max_n_steps:
                    break
                steps = min(2 * steps, options.max_n_steps)
            notes = ()
            if abs(delta) > tolerance:
                notes = (f"convergence delta {delta:+.3g} is large against f(input) - f(baseline) = {expected:+.3g} after {steps} steps: raise max_n_steps",)
            results.append(TargetResult(
                subject.token_spans, scores.tolist(),
                {"convergence_delta": round(delta, 8), "f_input": round(target_scores[j], 6), "f_baseline": round(baseline_scores[j], 6), "n_steps": steps},
                notes,
            ))
        return results

    def integrate(self, scorer, layer, ids, embedded, reference, target, position, steps: int):
        """Attributions per token: (input - baseline) times the path integral of the gradient, by
        Gauss-Legendre quadrature of ``steps`` points, ``internal_batch_size`` at a time."""
        batch = self.options.internal_batch_size
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas = torch.tensor((nodes + 1) / 2, dtype=torch.float32, device=scorer.device)
        weights = torch.tensor(weights / 2, dtype=torch.float32, device=scorer.device)
        gradient_sum = torch.zeros_like(embedded[0])
        for start in range(0, steps, batch):
            alpha = alphas[start : start + batch, None, None]
            points = (reference + alpha * (embedded - reference)).requires_grad_(True)
            with replaced_embeddings(layer, points), torch.enable_grad():
                logits = scorer.logits(ids.expand(points.shape[0], -1)).logits
                probability = Scorer.select(logits, [target], [position])[:, 0]
                (gradient,) = torch.autograd.grad(probability.sum(), points)
            scorer.gradient_evaluations += points.shape[0]
            gradient_sum += (weights[start : start + batch, None, None] * gradient.float()).sum(0)
        return ((embedded - reference)[0] * gradient_sum).sum(-1)

    def baseline_token(self, tokenizer):
        order = {"pad": ("pad_token_id", "mask_token_id"), "mask": ("mask_token_id", "pad_token_id"), "zero": ()}[self.options.baseline]
        return next((getattr(tokenizer, name) for name in order if getattr(tokenizer, name, None) is not None), None)

    @staticmethod
    def path_scores(scorer, layer, ids, reference, targets, positions) -> list[float]:
        """f(baseline): the targets' probabilities with the baseline embeddings."""
        with replaced_embeddings(layer, reference), torch.no_grad():
            return Scorer.select(scorer.logits(ids).logits, targets, positions)[0].tolist()


@contextlib.contextmanager
def replaced_embeddings(layer, values):
    """Within the block, the embedding layer outputs ``values`` whatever ids it gets."""
    handle = layer.register_forward_hook(lambda module, inputs, output: values.to(output.dtype))
    try:
        yield
    finally:
        handle.remove()


# --- attention rollout ---------------------------------------------------------------------------


class AttentionRolloutExplainer(Explainer):
    """Attention rollout (Abnar & Zuidema, 2020): the head-averaged attention of every layer, with
    the residual connection added (0.5 A + 0.5 I, rows renormalised), multiplied through the
    layers; a target's scores are the rolled-out attention from the position its output is read
    at. A cheap baseline (one forward pass), NOT a faithful explanation: scores are unsigned and
    say nothing about the direction of an effect."""

    name = "attention"
    baseline = "none (attention weights, not a perturbation)"

    def notes(self):
        return ["attention rollout is a cheap baseline, not a faithful explanation: scores are attention flow (unsigned), not effects on the prediction"]

    def attribute(self, scorer, subject, positions, target_scores):
        ids = torch.tensor([subject.input_ids])
        with eager_attention(scorer.model), torch.inference_mode():
            try:
                outputs = scorer.logits(ids, output_attentions=True)
            except TypeError:  # a wrapper around a transformers encoder (the crf head): ask the encoder
                encoder = next((m for m in scorer.model.modules() if m is not scorer.model and hasattr(m, "set_attn_implementation")), None)
                outputs = encoder(**scorer.inputs(ids), output_attentions=True) if encoder is not None else None
        attentions = getattr(outputs, "attentions", None)
        if not attentions:
            raise lccore.ConfigError("explainer attention: the model returns no attention weights (a transformers model is needed)")
        length = ids.shape[1]
        identity = torch.eye(length)
        rollout = identity
        for layer in attentions:
            mixed = 0.5 * layer[0].float().mean(0).cpu() + 0.5 * identity
            rollout = (mixed / mixed.sum(-1, keepdim=True)) @ rollout
        results = []
        for position in positions:
            reader = position if position is not None else (0 if subject.token_spans[0] is None else length - 1)
            results.append(TargetResult(subject.token_spans, rollout[reader].tolist(), {"read_at_token": reader, "layers": len(attentions)}))
        return results


@contextlib.contextmanager
def eager_attention(model):
    """The eager attention implementation (the only one that returns weights) within the block."""
    owner = next((m for m in model.modules() if hasattr(m, "set_attn_implementation") and hasattr(m, "config")), None)
    current = getattr(getattr(owner, "config", None), "_attn_implementation", None)
    if owner is None or current in (None, "eager"):
        yield
        return
    owner.set_attn_implementation("eager")
    try:
        yield
    finally:
        owner.set_attn_implementation(current)


# --- random --------------------------------------------------------------------------------------


class RandomExplainer(Explainer):
    """Uniform random word scores in [-1, 1): the baseline a faithful explainer must beat. Drawn
    from ``seed`` and the text, so a text gets the same scores whatever batch it is in."""

    name = "random"
    baseline = "none (random scores)"

    def notes(self):
        return ["random attributions: the faithfulness baseline, not an explanation"]

    def attribute(self, scorer, subject, positions, target_scores):
        rng = np.random.default_rng([self.options.seed, zlib.crc32(subject.text.encode("utf-8"))])
        _, owners = record.aggregate(subject.token_spans, [0.0] * len(subject.token_spans), subject.words)
        pieces = np.bincount([o for o in owners if o is not None], minlength=len(subject.words))
        results = []
        for _ in subject.targets:
            word_scores = rng.uniform(-1.0, 1.0, size=len(subject.words))
            scores = [0.0 if owner is None else float(word_scores[owner] / pieces[owner]) for owner in owners]
            results.append(TargetResult(subject.token_spans, scores, {"seed": self.options.seed}))
        return results
