#!/usr/bin/env python3
"""PyTorch reference of moescale's MoE transformer and training step.

The same model as trainer/model.cpp (pre-RMSNorm, rotary, causal SDPA with GQA,
SwiGLU, stacked expert weights, topk / rmoe / hash routers, dropless sorted
dispatch) and the same step (AdamW, warmup + cosine, clipping, aux and z
losses), written the way one would in Python. bench/trainer_vs_pytorch.sh runs
it next to build/bench/trainer_bench and compares tokens per second.
"""
import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

INIT_STD = 0.02


def linear(d_in, d_out, std):
    layer = nn.Linear(d_in, d_out, bias=False)
    nn.init.normal_(layer.weight, 0.0, std)
    return layer


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def swiglu(gate_up, f):
    return F.silu(gate_up[..., :f]) * gate_up[..., f:]


class MoeFfn(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = a
        d, f, e = a.d_model, a.ffn, a.experts
        self.w_gate_up = nn.Parameter(torch.randn(e, d, 2 * f) * INIT_STD)
        self.w_down = nn.Parameter(torch.randn(e, f, d) * INIT_STD / math.sqrt(2 * a.layers))
        if a.router == "topk":
            self.gate = linear(d, e, INIT_STD)
        elif a.router == "rmoe":
            self.proj = linear(d, a.router_dim, INIT_STD)
            self.gate = linear(a.router_dim, e, INIT_STD)
        else:
            self.register_buffer("hash_table", torch.randint(e, (a.vocab,)))

    def route(self, x, tokens, state, gru):
        k = self.a.top_k
        if self.a.router == "hash":
            first = self.hash_table[tokens].unsqueeze(1)
            experts = (first + torch.arange(k)) % self.a.experts
            return experts, torch.full((x.shape[0], k), 1.0 / k), None, None, state
        if self.a.router == "rmoe":
            if state is None:
                state = torch.zeros(x.shape[0], self.a.router_dim)
            state = gru(self.proj(x), state)
            logits = self.gate(state)
        else:
            logits = self.gate(x)
        probs = logits.softmax(-1)
        top, experts = probs.topk(k, -1)
        weights = torch.ones_like(top) if k == 1 else top / top.sum(-1, keepdim=True)
        return experts, weights, logits, probs, state

    def forward(self, x, tokens, state, gru):
        experts, weights, logits, probs, state = self.route(x, tokens, state, gru)
        k, e, f = experts.shape[1], self.a.experts, self.a.ffn
        flat = experts.reshape(-1)
        order = flat.sort(stable=True).indices
        token = order // k
        counts = torch.bincount(flat, minlength=e)
        xs = x[token]
        outs, offset = [], 0
        for i, c in enumerate(counts.tolist()):
            if c == 0:
                continue
            block = xs[offset:offset + c]
            outs.append(swiglu(block @ self.w_gate_up[i], f) @ self.w_down[i])
            offset += c
        ys = torch.cat(outs) * weights.reshape(-1)[order].unsqueeze(1)
        y = torch.zeros_like(x).index_add(0, token, ys)
        if probs is not None:
            share = counts.to(probs.dtype) / flat.numel()
            aux = e * (share * probs.mean(0)).sum()
            z = torch.logsumexp(logits, -1).square().mean()
        else:
            aux = z = torch.zeros(())
        return y, state, aux, z


class Block(nn.Module):
    def __init__(self, a, moe):
        super().__init__()
        self.a = a
        d, hd = a.d_model, a.head_dim
        q, kv = a.heads * hd, a.kv_heads * hd
        out_std = INIT_STD / math.sqrt(2 * a.layers)
        self.attn_norm = nn.Parameter(torch.ones(d))
        self.ffn_norm = nn.Parameter(torch.ones(d))
        self.wqkv = linear(d, q + 2 * kv, INIT_STD)
        self.wo = linear(q, d, out_std)
        if moe:
            self.moe = MoeFfn(a)
        else:
            self.moe = None
            self.w_gate_up = linear(d, 2 * a.ffn, INIT_STD)
            self.w_down = linear(a.ffn, d, out_std)

    def attention(self, x, cos, sin):
        b, t, _ = x.shape
        h, kvh, hd = self.a.heads, self.a.kv_heads, self.a.head_dim
        q, k, v = self.wqkv(x).split([h * hd, kvh * hd, kvh * hd], dim=-1)
        q = rotate(q.view(b, t, h, hd), cos, sin).transpose(1, 2)
        k = rotate(k.view(b, t, kvh, hd), cos, sin).transpose(1, 2)
        v = v.view(b, t, kvh, hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kvh != h)
        return self.wo(y.transpose(1, 2).reshape(b, t, h * hd))

    def forward(self, x, tokens, cos, sin, state, gru):
        x = x + self.attention(F.rms_norm(x, (x.shape[-1],), self.attn_norm, 1e-6), cos, sin)
        xn = F.rms_norm(x, (x.shape[-1],), self.ffn_norm, 1e-6)
        if self.moe is None:
            return x + self.w_down(swiglu(self.w_gate_up(xn), self.a.ffn)), state, None, None
        y, state, aux, z = self.moe(xn.reshape(-1, xn.shape[-1]), tokens.reshape(-1), state, gru)
        return x + y.view_as(x), state, aux, z


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = a
        self.embed = nn.Embedding(a.vocab, a.d_model)
        nn.init.normal_(self.embed.weight, 0.0, INIT_STD)
        self.gru = nn.GRUCell(a.router_dim, a.router_dim) if a.router == "rmoe" else None
        self.blocks = nn.ModuleList(
            Block(a, a.experts > 1 and (i + 1) % a.moe_every == 0) for i in range(a.layers))
        self.final_norm = nn.Parameter(torch.ones(a.d_model))
        half = a.head_dim // 2
        inv_freq = 10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
        angles = torch.outer(torch.arange(a.seq_len, dtype=torch.float64), inv_freq)
        self.register_buffer("cos", angles.cos().float().unsqueeze(1))
        self.register_buffer("sin", angles.sin().float().unsqueeze(1))

    def forward(self, tokens):
        t = tokens.shape[1]
        cos, sin = self.cos[:t], self.sin[:t]
        x, state, auxes, zs = self.embed(tokens), None, [], []
        for block in self.blocks:
            x, state, aux, z = block(x, tokens, cos, sin, state, self.gru)
            if aux is not None:
                auxes.append(aux)
                zs.append(z)
        x = F.rms_norm(x, (x.shape[-1],), self.final_norm, 1e-6)
        logits = x @ self.embed.weight.t()
        zero = torch.zeros(())
        aux = torch.stack(auxes).mean() if auxes else zero
        z = torch.stack(zs).mean() if zs else zero
        return logits, aux, z


def learning_rate(a, step):
    warmup = max(1, round(a.warmup_fraction * a.steps))
    if step < warmup:
        return a.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, a.steps - warmup))
    return a.lr * (a.min_lr_ratio + (1 - a.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True, help="folder with train.bin")
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=0)
    p.add_argument("--ffn", type=int, default=0)
    p.add_argument("--experts", type=int, default=1)
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--moe-every", type=int, default=1)
    p.add_argument("--router", default="topk", choices=["topk", "rmoe", "hash"])
    p.add_argument("--router-dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed steps")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup-fraction", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--aux-loss-weight", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    a.kv_heads = a.kv_heads or a.heads
    a.head_dim = a.d_model // a.heads
    a.ffn = a.ffn or ((8 * a.d_model + 2) // 3 + 31) // 32 * 32  # planner's default
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    model = Model(a)
    params = list(model.parameters())
    decay = [q for q in params if q.dim() >= 2]
    keep = [q for q in params if q.dim() < 2]
    groups = [{"params": decay, "weight_decay": a.weight_decay}]
    if keep:
        groups.append({"params": keep, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.95), eps=1e-8)

    data = np.memmap(f"{a.data}/train.bin", dtype=np.uint16, mode="r")
    rng = np.random.default_rng(a.seed)
    timed_s, timed_tokens, loss_value = 0.0, 0, float("nan")
    for step in range(a.steps):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = learning_rate(a, step)
        starts = rng.integers(0, len(data) - a.seq_len, size=a.batch)
        windows = torch.from_numpy(
            np.stack([data[s:s + a.seq_len + 1] for s in starts]).astype(np.int64))
        inputs, targets = windows[:, :-1], windows[:, 1:]
        opt.zero_grad(set_to_none=True)
        logits, aux, z = model(inputs)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss = ce + a.aux_loss_weight * aux
        loss_value = ce.item()
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        opt.step()
        if step >= a.warmup_steps:
            timed_s += time.perf_counter() - t0
            timed_tokens += a.batch * a.seq_len
    print(json.dumps({"tokens_per_s": timed_tokens / timed_s, "timed_steps": a.steps - a.warmup_steps,
                      "final_loss": loss_value, "threads": torch.get_num_threads(),
                      "params": sum(q.numel() for q in params)}))


if __name__ == "__main__":
    main()
