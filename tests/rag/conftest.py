import pytest
import torch

from llmlab.model import load_book_model


@pytest.fixture(scope="session")
def book():
    torch.set_num_threads(1)
    model, tok = load_book_model()
    return model.eval(), tok
