"""The prior of a caption or qa context: the task's prompt (data/tasks.py), its grammar as token masks
(prior/grammars.py) and the bias the trained parts compute from the channels, on one backbone."""

from __future__ import annotations

import numpy as np

from specdifftree.data.context import Context


def text_prior(backbone, parts, context: Context, name: str = "tslm", parts_id: str = ""):
    """A TSLMPrior that writes the answer of a text context. The bias is the head of the mean of the
    channels' pooled encodings (as the curriculum computes it for several series); a soft prompt,
    when the parts have a projector, is the first channel's."""
    from specdifftree.data.tasks import channels, machine, text_prompt
    from specdifftree.prior.grammars import TextGrammar
    from specdifftree.prior.model import TSLMPrior

    xs = list(channels(context).values())
    embedding = np.mean([parts.embed(x) for x in xs], axis=0).astype(np.float32)
    grammar = TextGrammar(machine(context), backbone.token_strings(), backbone.eos_id)
    return TSLMPrior(backbone, text_prompt(context), grammar.max_tokens(), parts.bias(xs[0], embedding), name=name,
                     grammar=grammar, soft_prompt=parts.soft_prompt_for(xs[0]), series_features=embedding,
                     parts_id=parts_id or parts.weights_sha256())


def text_default(spec, context: Context):
    """The prior spec a context runs with: `default` on a caption or qa context means the packaged
    backbone trained to write text (spec "text") once it is built and no trained prior is installed
    for `default`; forecasts, and every other spec, run as given."""
    from specdifftree.errors import SDTError
    from specdifftree.prior.default import default_backbone
    from specdifftree.prior.spec import checkpoint_dir, parse_prior

    if spec != "default" or context is None or context.task is None or checkpoint_dir(parse_prior(spec)) is not None:
        return spec
    try:
        default_backbone("text")
    except SDTError:  # not built: today's default backbone writes the text
        return spec
    return "text"


__all__ = ["text_default", "text_prior"]
