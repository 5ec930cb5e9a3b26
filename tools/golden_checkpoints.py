#!/usr/bin/env python3
"""Small PyTorch checkpoints for the Rust checkpoint reader's tests (src/checkpoint, src/weights.rs).

Writes under tests/data/checkpoints/ (a few KB each):
  plain.pt            torch.save of a plain state dict: f32, f16, bf16, f64 and int64 tensors, a
                      transposed (non-contiguous) view, a strided slice, two tensors sharing one
                      storage at different offsets, an expanded (stride-0) view, a 0-d tensor, an empty tensor, a Parameter
  plain_p5.pt         the same dict saved with pickle protocol 5 (FRAME, MEMOIZE, STACK_GLOBAL ...)
  plain.safetensors   the same tensors, contiguous, in the same dtypes: the expected values
  ema.pt              {'ema': state_dict, 'step': 5} like DiffVSR_UNet.pt (ema.safetensors: expected)
  multi.pt            {'state_dict': sd, 'ema': sd2, 'epoch': 3, 'optimizer': {...}} to test --key
                      (multi_state_dict.safetensors, multi_ema.safetensors: expected)
  module.pt           nn.Module.state_dict() of a tiny module (OrderedDict with _metadata, a
                      BatchNorm's int64 num_batches_tracked) (module.safetensors: expected)
  diffusers_bin/diffusion_pytorch_model.bin   module.pt's dict as in a diffusers folder
  legacy.pt           the legacy non-zip torch.save format (must be refused with instructions)
  malicious.pt        a torch.save zip whose pickle calls os.system (must be refused, naming it)
  truncated.pt        plain.pt cut in half (must be refused as truncated)

Values are deterministic (seeded). Needs torch and safetensors:

    /opt/golden-venv/bin/python tools/golden_checkpoints.py
"""
import collections
import os
import shutil

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "checkpoints")


def plain_state_dict(g):
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.randn(4, 3, 3, 3, generator=g)
    sd["conv.bias"] = torch.randn(4, generator=g)
    sd["half"] = torch.randn(7, 5, generator=g).half()
    sd["bf"] = torch.randn(3, 33, generator=g).bfloat16()
    sd["double"] = torch.randn(2, 3, generator=g).double()
    sd["position_ids"] = torch.arange(77).unsqueeze(0)
    base = torch.randn(6, 9, generator=g)
    sd["transposed"] = base.t()  # non-contiguous view, strides (1, 9)
    sd["sliced"] = base[1:5, ::3]  # offset 9, strides (9, 3)
    big = torch.randn(40, generator=g)
    sd["shared_a"] = big[2:14].view(3, 4)  # two views of one storage at different offsets
    sd["shared_b"] = big[10:40]
    sd["half_t"] = torch.randn(5, 3, generator=g).half().t()
    sd["expanded"] = torch.randn(3, 1, generator=g).expand(3, 4)  # stride 0
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 4)
    sd["param"] = torch.nn.Parameter(torch.randn(3, generator=g))
    return sd


def expected(sd):
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.norm = torch.nn.GroupNorm(2, 4)
        self.bn = torch.nn.BatchNorm1d(4)
        self.proj = torch.nn.Linear(4, 2)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this checkpoint ran code",))


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "diffusers_bin"))
    p = lambda *n: os.path.join(OUT, *n)
    g = torch.Generator().manual_seed(1234)

    sd = plain_state_dict(g)
    torch.save(sd, p("plain.pt"))
    torch.save(sd, p("plain_p5.pt"), pickle_protocol=5)
    save_file(expected(sd), p("plain.safetensors"))
    # The views above must really be non-contiguous/shared for the test to mean anything.
    assert not sd["transposed"].is_contiguous() and not sd["sliced"].is_contiguous()
    assert sd["shared_a"].untyped_storage().data_ptr() == sd["shared_b"].untyped_storage().data_ptr()

    ema = collections.OrderedDict((k, torch.randn(v.shape, generator=g)) for k, v in [("a.weight", torch.empty(3, 2)), ("a.bias", torch.empty(3))])
    torch.save({"ema": ema, "step": 5}, p("ema.pt"))
    save_file(expected(ema), p("ema.safetensors"))

    sd1 = collections.OrderedDict([("w", torch.randn(2, 2, generator=g)), ("b", torch.randn(2, generator=g))])
    sd2 = collections.OrderedDict([("w", torch.randn(2, 2, generator=g)), ("b", torch.randn(2, generator=g))])
    optim = {"state": {0: {"exp_avg": torch.randn(2, generator=g), "step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
    torch.save({"state_dict": sd1, "ema": sd2, "epoch": 3, "optimizer": optim}, p("multi.pt"))
    save_file(expected(sd1), p("multi_state_dict.safetensors"))
    save_file(expected(sd2), p("multi_ema.safetensors"))

    torch.manual_seed(7)
    m = Tiny()
    m.bn.num_batches_tracked += 3
    msd = m.state_dict()
    assert hasattr(msd, "_metadata")
    torch.save(msd, p("module.pt"))
    torch.save(msd, p("diffusers_bin", "diffusion_pytorch_model.bin"))
    save_file(expected(msd), p("module.safetensors"))

    torch.save({"w": torch.ones(3)}, p("legacy.pt"), _use_new_zipfile_serialization=False)
    torch.save({"w": torch.ones(3), "payload": Evil()}, p("malicious.pt"))

    with open(p("plain.pt"), "rb") as f:
        full = f.read()
    with open(p("truncated.pt"), "wb") as f:
        f.write(full[: len(full) // 2])

    for root, _, files in os.walk(OUT):
        for n in sorted(files):
            print(f"{os.path.relpath(os.path.join(root, n), OUT):50s} {os.path.getsize(os.path.join(root, n)):7d} bytes")


if __name__ == "__main__":
    main()
