"""Keywords langloc passes to transformers take effect, or the call fails loudly."""

import pytest
import torch

from conftest import tiny_model
from langloc.errors import LanglocError
from langloc.models.calls import logits_at


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3_text"])
def test_logits_at_returns_exactly_the_kept_positions(arch):
    model = tiny_model(arch, layers=2, width=32)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    keep = torch.tensor([1, 4])
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits
        kept = logits_at(model, keep, input_ids=ids, attention_mask=torch.ones_like(ids))
    torch.testing.assert_close(kept, full[:, keep])


def test_a_release_that_ignores_logits_to_keep_is_an_error():
    model = tiny_model("llama", layers=2, width=32)

    def ignores_the_keyword(**kwargs):
        kwargs.pop("logits_to_keep")
        return model(**kwargs)

    ids = torch.tensor([[1, 5, 9, 13]])
    with pytest.raises(LanglocError, match="ignores the logits_to_keep keyword"):
        logits_at(ignores_the_keyword, torch.tensor([2]), input_ids=ids)
