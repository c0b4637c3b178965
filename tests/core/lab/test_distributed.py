import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from core.lab.distributed import init_distributed, shard_sampler, wrap_ddp
from core.lab.harness import load_checkpoint

REPO = Path(__file__).resolve().parents[3]

# Each rank starts from different random weights and sees a different half of the data; DDP must
# broadcast rank 0's weights and average gradients for the ranks to end identical.
WORKER = r"""
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.lab.distributed import cleanup, init_distributed, shard_sampler, wrap_ddp
from core.lab.harness import fit, seed_everything

out = Path(sys.argv[1])
info = init_distributed("cpu")
seed_everything(100 + info.rank)
x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
dataset = TensorDataset(torch.arange(64), x, y)
loader = DataLoader(dataset, batch_size=8, sampler=shard_sampler(dataset, info, shuffle=True, seed=0))
model = wrap_ddp(nn.Linear(4, 1), info)
initial = {k: v.clone() for k, v in model.module.state_dict().items()}
seen = []

def train_step(m, batch):
    index, xb, yb = batch
    seen.append(index)
    return ((m(xb).squeeze(-1) - yb) ** 2).mean()

def evaluate(m):
    return {"val_loss": ((m(x).squeeze(-1) - y) ** 2).mean().item()}

optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
history = fit(model, optimizer, train_data=loader, train_step=train_step, evaluate=evaluate, epochs=3,
              monitor="val_loss", mode="min", checkpoint_dir=out / "ckpt", progress=False)
torch.save({"world_size": info.world_size, "initial": initial, "final": model.module.state_dict(),
            "seen": torch.cat(seen), "best_epoch": history.best_epoch}, out / f"rank{info.rank}.pt")
cleanup()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_is_a_no_op(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.device) == (0, 1, True, torch.device("cpu"))
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, info) is model
    assert sorted(shard_sampler(list(range(10)), info, shuffle=True)) == list(range(10))


def test_two_ranks_train_identical_weights_on_different_shards(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2
    per_epoch = 32  # 64 samples over 2 ranks
    first0, first1 = set(rank0["seen"][:per_epoch].tolist()), set(rank1["seen"][:per_epoch].tolist())
    assert not first0 & first1 and first0 | first1 == set(range(64))
    assert rank0["best_epoch"] == rank1["best_epoch"]
    for key in rank0["final"]:
        assert torch.equal(rank0["final"][key], rank1["final"][key]), key
        assert not torch.equal(rank0["final"][key], rank0["initial"][key]), key
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["epoch"] == 3
