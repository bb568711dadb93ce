#!/usr/bin/env python3
"""PyTorch's own data parallelism and FSDP on CPU (Gloo over loopback), the peers of bench/scaling/run.

The model is the GPT-2 of ../shared/peers/torch_gpt2_bench.py (imported from --peer), trained with AdamW on
random tokens for --steps timed steps after --warmup, in --nproc processes of one thread each, every process
holding B/nproc rows of each global batch of B:

  --mode ddp    torch.nn.parallel.DistributedDataParallel (gradients all-reduced in buckets)
  --mode fsdp   torch.distributed.fsdp.FullyShardedDataParallel around each block and the whole model,
                ShardingStrategy.SHARD_GRAD_OP (parameters gathered for forward and kept through backward, as
                levanter-cpp's FSDP does), or FULL_SHARD with --full-shard
  --mode tp     tensor parallelism with torch.distributed.tensor.parallel (PyTorch 2): every block's fused qkv and
                MLP input projection ColwiseParallel, their output projections RowwiseParallel (Megatron's layout,
                levanter-cpp's [mlp, heads]); every process runs the whole global batch, and the embeddings and
                the tied LM head stay whole on each process, as in levanter-cpp's [mlp, heads]. A process's block
                of qkv's columns is taken as its heads' q, k and v: a fixed permutation of the whole projection's
                columns, so the same model family and the same work, not the same numbers.

Prints one `RESULT {json}` line: median step time, tokens/s of the job, and the peak RSS of process 0.
"""
import argparse, importlib.util, json, math, os, resource, statistics, sys, time, types


def worker(rank, a, port, out):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("peer", a.peer)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=a.nproc)
    torch.manual_seed(0)
    model = peer.GPT(V=50257, maxT=1024, L=a.layers, NH=a.heads, C=a.dim)
    if a.mode == "tp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
        import torch.nn.functional as F

        mesh = init_device_mesh("cpu", (a.nproc,))

        def local_attn(self, x):
            B, T, _ = x.shape
            q, k, v = self.qkv(x).chunk(3, dim=2)  # this process's heads
            hs = q.size(-1) // self.NH
            q, k, v = (t.view(B, T, self.NH, hs).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            att = att.masked_fill(~self.mask[:, :, :T, :T], float("-inf"))
            y = F.softmax(att, dim=-1) @ v
            return self.proj(y.transpose(1, 2).contiguous().view(B, T, self.NH * hs))

        for blk in model.blocks:
            parallelize_module(blk, mesh, {"qkv": ColwiseParallel(), "proj": RowwiseParallel(),
                                           "fc": ColwiseParallel(), "fcproj": RowwiseParallel()})
            blk.NH //= a.nproc
            blk.attn = types.MethodType(local_attn, blk)
        wrapped = model
    elif a.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        # The causal masks are constant bool buffers, which Gloo cannot broadcast in torch 1.13.
        DDP._set_params_and_buffers_to_ignore_for_model(model, [n for n, _ in model.named_buffers()])
        wrapped = DDP(model, broadcast_buffers=False)
    else:
        import functools
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, ShardingStrategy
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        strategy = ShardingStrategy.FULL_SHARD if a.full_shard else ShardingStrategy.SHARD_GRAD_OP
        wrapped = FSDP(model, sharding_strategy=strategy, auto_wrap_policy=ModuleWrapPolicy({peer.Block}),
                       device_id=torch.device("cpu"), use_orig_params=True)
    opt = torch.optim.AdamW(wrapped.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    # Data parallelism: each process its rows; tensor parallelism: every process the whole batch.
    rows = a.B if a.mode == "tp" else a.B // a.nproc
    g = torch.Generator().manual_seed(1 if a.mode == "tp" else 1 + rank)
    times = []
    for step in range(a.warmup + a.steps):
        x = torch.randint(0, 50257, (rows, a.T), generator=g)
        y = torch.randint(0, 50257, (rows, a.T), generator=g)
        dist.barrier()
        t0 = time.perf_counter()
        if a.precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = wrapped(x, y)
        else:
            loss = wrapped(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if rank == 0:
            print(f"{'warmup' if step < a.warmup else 'step'} {step}: loss {loss.item():.4f} {dt * 1000:.1f} ms",
                  flush=True)
        if step >= a.warmup:
            times.append(dt)
    if rank == 0:
        med = statistics.median(times)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with open(out, "w") as f:
            json.dump(dict(impl=f"pytorch-{a.mode}" + ("-full-shard" if a.full_shard else ""), torch=torch.__version__,
                           processes=a.nproc, B=a.B, T=a.T, precision=a.precision, ms_median=med * 1000,
                           tok_per_s=a.B * a.T / med, rss_mb_rank0=round(rss, 1)), f)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", required=True, help="path of torch_gpt2_bench.py (for its GPT)")
    ap.add_argument("--mode", choices=["ddp", "fsdp", "tp"], default="ddp")
    ap.add_argument("--full-shard", action="store_true", dest="full_shard")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--T", type=int, default=128)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--port", type=int, default=29671)
    a = ap.parse_args()
    if a.B % a.nproc:
        ap.error("--B must be a multiple of --nproc")
    import tempfile
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "result.json")
        mp.spawn(worker, args=(a, a.port, out), nprocs=a.nproc, join=True)
        print("RESULT " + open(out).read(), flush=True)


if __name__ == "__main__":
    sys.exit(main())
