#!/usr/bin/env python3
"""Golden tensors for the SD x4-upscaler UNet and VAE decoder, made with diffusers (the reference).

Builds tiny configs of the same architecture (UNet2DConditionModel, AutoencoderKL) with seeded
random weights, runs them on seeded random inputs, and writes under tests/data/sdx4/:
  unet_config.json, unet.safetensors (weights, f16-exact), unet_io.safetensors (inputs, output,
  intermediates); vae_config.json, vae.safetensors, vae_io.safetensors.
Weights are rounded to f16 before the run and stored as f16, so the files stay small and the
reference ran on exactly the stored values.

    pip install torch diffusers==0.42.1 safetensors
    python3 tools/golden_sdx4.py            # rewrites tests/data/sdx4/
"""
import json
import os
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "sdx4")

UNET_CONFIG = dict(
    sample_size=32,
    in_channels=7,
    out_channels=4,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[32, 32, 32, 64],
    layers_per_block=2,
    attention_head_dim=2,  # diffusers naming: this is the number of heads (as SD x4's 8)
    cross_attention_dim=32,
    only_cross_attention=[True, True, True, False],
    use_linear_projection=True,
    num_class_embeds=1000,
    norm_num_groups=8,
    norm_eps=1e-5,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
    mid_block_scale_factor=1,
    upcast_attention=False,
    resnet_time_scale_shift="default",
)

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[32, 32, 64],
    layers_per_block=1,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
    scaling_factor=0.08333,
)


def randomize(model, gen):
    """Seeded weights that exercise every path: no zero-initialised tensors left."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim >= 2:
                fan_in = p[0].numel()
                if "embedding" in name:
                    fan_in = 1
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            elif ("norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            p.copy_(p.half().float())  # stored as f16: the reference runs on the stored values


def save_weights(model, path):
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, path)


def hooks(model, names):
    taps = {}

    def make(name):
        def hook(_m, _i, out):
            t = out[0] if isinstance(out, tuple) else out
            taps[name] = t.detach().clone()

        return hook

    for name in names:
        model.get_submodule(name).register_forward_hook(make(name))
    return taps


def unet_golden(gen):
    unet = UNet2DConditionModel(**UNET_CONFIG).eval()
    randomize(unet, gen)
    taps = hooks(unet, ["conv_in", "down_blocks.0", "down_blocks.1", "down_blocks.2", "down_blocks.3", "mid_block", "up_blocks.0", "up_blocks.3"])
    b, h, w = 2, 16, 24
    sample = torch.randn(b, 7, h, w, generator=gen)
    timestep = torch.tensor([981.0, 500.0])
    class_labels = torch.tensor([20, 350])
    text = torch.randn(b, 77, UNET_CONFIG["cross_attention_dim"], generator=gen)
    with torch.no_grad():
        out = unet(sample, timestep, encoder_hidden_states=text, class_labels=class_labels).sample
    save_weights(unet, os.path.join(OUT, "unet.safetensors"))
    io = {
        "sample": sample,
        "timestep": timestep,
        "class_labels": class_labels.float(),
        "encoder_hidden_states": text,
        "output": out,
    }
    io.update({f"tap.{k}": v for k, v in taps.items()})
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(OUT, "unet_io.safetensors"))
    # (after saving: the hooks keep the latest forward's taps)
    # A latent that is not a multiple of 2^levels: diffusers then upsamples to each skip's size.
    odd = torch.randn(1, 7, 12, 18, generator=gen)
    odd_text = torch.randn(1, 77, UNET_CONFIG["cross_attention_dim"], generator=gen)
    with torch.no_grad():
        odd_out = unet(odd, torch.tensor([21.0]), encoder_hidden_states=odd_text, class_labels=torch.tensor([50])).sample
    save_file(
        {"sample": odd, "timestep": torch.tensor([21.0]), "class_labels": torch.tensor([50.0]), "encoder_hidden_states": odd_text, "output": odd_out},
        os.path.join(OUT, "unet_odd_io.safetensors"),
    )
    with open(os.path.join(OUT, "unet_config.json"), "w") as f:
        json.dump(dict(unet.config), f, indent=1, default=list)
    print("unet params", sum(p.numel() for p in unet.parameters()), "output", tuple(out.shape), file=sys.stderr)


def vae_golden(gen):
    vae = AutoencoderKL(**VAE_CONFIG).eval()
    randomize(vae, gen)
    taps = hooks(vae, ["decoder.conv_in", "decoder.mid_block"])
    latents = torch.randn(2, 4, 16, 24, generator=gen)  # already divided by scaling_factor
    with torch.no_grad():
        out = vae.decode(latents).sample
    save_weights(vae, os.path.join(OUT, "vae.safetensors"))
    io = {"latents": latents, "output": out}
    io.update({f"tap.{k}": v for k, v in taps.items()})
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(OUT, "vae_io.safetensors"))
    with open(os.path.join(OUT, "vae_config.json"), "w") as f:
        json.dump(dict(vae.config), f, indent=1, default=list)
    print("vae params", sum(p.numel() for p in vae.parameters()), "output", tuple(out.shape), file=sys.stderr)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(20261126)
    unet_golden(gen)
    vae_golden(gen)
