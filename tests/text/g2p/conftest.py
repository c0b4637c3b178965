"""One torch thread for these tests: tiny models gain nothing from more, and on a busy machine the threads
of one process wait for each other."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
