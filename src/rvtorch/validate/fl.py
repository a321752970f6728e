"""Federated-learning suite: FedAvg over torch.distributed (gloo, TCP on 127.0.0.1).

One process per rank (under QEMU: one qemu process per rank, started from the host, because a
guest without binfmt cannot exec target binaries itself). Every rank holds one non-IID shard of
the 8x8 digits (``rvtorch.digits`` writes the shards file on the host), trains an MLP
64-64-32-10 (the DML paper's 784-64-32-10 for 8x8 inputs) with SGD (lr, momentum 0.5) for a few
local epochs, then the weights are averaged, weighted by shard size, in two schemes:

- ``master-worker``: reduce to rank 0 (the master averages) and broadcast back (a farm with
  feedback in FastFlow terms);
- ``peer-to-peer``: all_reduce, every rank averages on its own (all-to-all).

Checks (rank 0 writes them): after every aggregation all ranks hold bit-identical weights;
accuracy on the held-out digits rises and ends >= 0.9; on the target, accuracy per round and
final weights match the host run (same seeds, same shards, same initial weights) within
tolerance. Other ranks write their own small result files; a rank that dies or hangs makes the
others fail within ``--timeout`` (gloo's collective timeout) instead of waiting forever, and the
host launcher reports which rank it was.
"""

from __future__ import annotations

import datetime
import os
import random
import signal
import struct
import time
from array import array
from itertools import pairwise
from typing import Any

from .common import Result, atomic_torch_save, base_parser, run_suite

SCHEMES = ("master-worker", "peer-to-peer")
MIN_FINAL_ACCURACY = 0.9
ACC_TOL = 0.02       # accuracy per round, host vs target
WEIGHT_ATOL = 2e-3   # final weights, host vs target (fp32 SGD on different kernels)
MAGIC = b"RVFLDIG1"


def read_shards(path: str) -> dict[str, Any]:
    """The ``rvtorch.digits`` shards file (format in that module), with the standard library."""
    with open(path, "rb") as fh:
        data = fh.read()
    head = struct.Struct("<8s7I")
    magic, n_feat, n_cls, n_shards, n_test, seed, _, _ = head.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"{path}: not a digits shards file")
    off = head.size
    sizes = struct.unpack_from(f"<{n_shards}I", data, off)
    off += 4 * n_shards

    def take(n: int) -> tuple[array, array]:
        nonlocal off
        x = array("f")
        x.frombytes(data[off:off + 4 * n * n_feat])
        off += 4 * n * n_feat
        y = array("i")
        y.frombytes(data[off:off + 4 * n])
        off += 4 * n
        if struct.pack("=I", 1) != struct.pack("<I", 1):
            x.byteswap()
            y.byteswap()
        return x, y

    shards = [take(n) for n in sizes]
    test = take(n_test)
    return {"n_features": n_feat, "n_classes": n_cls, "shards": shards, "test": test,
            "seed": seed}


def to_tensors(split: tuple[array, array], n_feat: int) -> tuple[Any, Any]:
    import torch

    x = torch.frombuffer(bytearray(split[0].tobytes()), dtype=torch.float32).reshape(-1, n_feat)
    y = torch.frombuffer(bytearray(split[1].tobytes()), dtype=torch.int32).to(torch.int64)
    return x.clone(), y.clone()


def make_model(n_feat: int, n_cls: int) -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(n_feat, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                         nn.Linear(32, n_cls))


def flat(model: Any) -> Any:
    import torch

    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def accuracy(model: Any, x: Any, y: Any) -> float:
    import torch

    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).double().mean())


def local_train(model: Any, x: Any, y: Any, args: Any, rank: int, rnd: int) -> float:
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.5)
    n = x.shape[0]
    last = 0.0
    for epoch in range(args.local_epochs):
        # The batch order comes from the standard library's RNG: identical on every platform.
        order = list(range(n))
        random.Random(args.seed * 1_000_003 + rank * 10_007 + rnd * 101 + epoch).shuffle(order)
        for i in range(0, n, args.batch):
            idx = torch.tensor(order[i:i + args.batch])
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            last = float(loss.detach())
    return last


def aggregate(model: Any, weight: float, scheme: str) -> None:
    """FedAvg: sum of weight * params over ranks (weights sum to 1), in the given scheme."""
    import torch.distributed as dist

    for p in model.parameters():
        p.data.mul_(weight)
        if scheme == "peer-to-peer":
            dist.all_reduce(p.data, op=dist.ReduceOp.SUM)
        else:
            dist.reduce(p.data, dst=0, op=dist.ReduceOp.SUM)
            dist.broadcast(p.data, src=0)


def fault(args: Any, rank: int, rnd: int) -> None:
    """Injected faults (``--fault kill@RANK:ROUND`` / ``hang@RANK:ROUND``): prove detection."""
    for spec in args.fault:
        kind, _, where = spec.partition("@")
        r, _, k = where.partition(":")
        if int(r) == rank and int(k) == rnd:
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "hang":
                while True:
                    time.sleep(60)


def body(args: Any, res: Result) -> None:
    import torch
    import torch.distributed as dist

    rank, world = args.rank, args.world
    res.info.update(rank=rank, world=world, scheme_list=list(SCHEMES))
    d = read_shards(args.shards)
    if len(d["shards"]) != world:
        raise ValueError(f"shards file has {len(d['shards'])} shards for {world} ranks")
    nf, nc = d["n_features"], d["n_classes"]
    x, y = to_tensors(d["shards"][rank], nf)
    xt, yt = to_tensors(d["test"], nf)
    sizes = [len(s[1]) for s in d["shards"]]
    weight = sizes[rank] / sum(sizes)
    res.info["shard_sizes"] = sizes
    res.info["shard_labels"] = [sorted(set(s[1].tolist())) for s in d["shards"]]
    init_path = os.path.join(args.data, "fl_init.pt")
    if args.role == "host" and rank == 0 and not os.path.exists(init_path):
        torch.manual_seed(args.seed)
        atomic_torch_save(make_model(nf, nc).state_dict(), init_path)

    # Debian's 2.6.0 has no libuv (FACTS): the TCPStore must use the classic backend.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    timeout = datetime.timedelta(seconds=args.timeout)
    with res.timed("init_process_group_s"):
        store = dist.TCPStore(args.master_addr, args.port, world, is_master=rank == 0,
                              timeout=timeout, use_libuv=False)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
    # The group works, not just exists: every rank contributes its rank to an all_reduce and
    # an all_gather, and must see 0 + 1 + ... + (world - 1) and [0, 1, ..., world - 1].
    probe = torch.tensor([float(rank)])
    dist.all_reduce(probe, op=dist.ReduceOp.SUM)
    seen = [torch.zeros(1) for _ in range(world)]
    dist.all_gather(seen, torch.tensor([float(rank)]))
    got = [int(x.item()) for x in seen]
    res.check("process_group", float(probe.item()) == world * (world - 1) / 2
              and got == list(range(world)), value={"all_reduce": float(probe.item()),
                                                    "all_gather": got},
              expected={"all_reduce": world * (world - 1) / 2, "all_gather": list(range(world))},
              detail="gloo collectives returned wrong values")
    host = None
    if args.role == "target" and rank == 0:
        host = torch.load(os.path.join(args.data, "fl_host.pt"), weights_only=True)
    runs: dict[str, Any] = {}
    for scheme in SCHEMES:
        model = make_model(nf, nc)
        if rank == 0:
            model.load_state_dict(torch.load(init_path, weights_only=True))
        for p in model.parameters():  # every rank starts from rank 0's initial weights
            dist.broadcast(p.data, src=0)
        accs, losses, max_diffs, round_s = [], [], [], []
        for rnd in range(args.rounds):
            t0 = time.perf_counter()
            fault(args, rank, rnd)
            losses.append(local_train(model, x, y, args, rank, rnd))
            aggregate(model, weight, scheme)
            mine = flat(model)
            gathered = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(gathered, mine)
            max_diffs.append(max(float((g - mine).abs().max()) for g in gathered))
            accs.append(accuracy(model, xt, yt))
            round_s.append(round(time.perf_counter() - t0, 4))
        runs[scheme] = {"accuracy": accs, "local_loss": losses, "max_rank_diff": max_diffs,
                        "round_s": round_s, "final": flat(model)}
        res.timings[f"{scheme}_s"] = round(sum(round_s), 4)
        # Every rank checks what it gathered itself: a rank whose view differs fails on its own.
        res.check(f"{scheme}:ranks_identical", all(m == 0.0 for m in max_diffs),
                  value=max(max_diffs), expected=0.0,
                  detail="ranks hold different weights after aggregation")
        if rank != 0:
            continue
        rises = accs[-1] > accs[0] and sum(b >= a - 0.01 for a, b in pairwise(accs)) >= (
            len(accs) - 1) * 0.75
        res.check(f"{scheme}:accuracy_rises", rises, value=accs,
                  detail="accuracy did not rise round over round")
        res.check(f"{scheme}:final_accuracy", accs[-1] >= MIN_FINAL_ACCURACY, value=accs[-1],
                  expected=f">= {MIN_FINAL_ACCURACY}")
        if host is not None:
            h = host[scheme]
            dacc = max(abs(a - b) for a, b in zip(accs, h["accuracy"], strict=True))
            res.check(f"{scheme}:accuracy_matches_host", dacc <= ACC_TOL, value=dacc,
                      tol=ACC_TOL, detail=f"host {h['accuracy']} target {accs}")
            res.check_close(f"{scheme}:weights_match_host", runs[scheme]["final"], h["final"],
                            rtol=0.0, atol=WEIGHT_ATOL)
    if rank == 0:
        res.figures["fl"] = {s: {k: v for k, v in r.items() if k != "final"}
                             for s, r in runs.items()}
        res.figures["fl_config"] = {"world": world, "rounds": args.rounds,
                                    "local_epochs": args.local_epochs, "lr": args.lr,
                                    "batch": args.batch, "shard_sizes": sizes}
        if args.role == "host":
            atomic_torch_save({s: {"accuracy": r["accuracy"], "final": r["final"]}
                               for s, r in runs.items()}, os.path.join(args.data, "fl_host.pt"))
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = base_parser("fl", __doc__ or "")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--shards", required=True, help="rvtorch.digits shards file, one per rank")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=4321)
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds a collective may wait for a peer before failing")
    p.add_argument("--fault", action="append", default=[],
                   help="inject kill@RANK:ROUND or hang@RANK:ROUND (tests of the checks)")
    return run_suite("fl", body, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
