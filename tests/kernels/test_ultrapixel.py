"""Tests of the UltraPixel added module, its checkpoint layout and its scale rules.

Parity numbers are the outputs of the official ``TransInr_withnorm`` (catcathh/UltraPixel@e85d3bc
``modules/inr_fea_res_lite.py``) on CPU in fp32 for the deterministic weights and inputs below; the
key table is the released ``ultrapixel_t2i.safetensors`` (written by ``train/train_t2i.py:262-281``)
written out literally here, so the code is checked against the release, not against itself.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from ultrares.kernels.ultrapixel import (
    GuidanceFusionModule,
    build_ultrapixel_modules,
    decoder_guide_scale,
    guide_scale,
    inject_guidance,
    lr_pixel_size,
    stage_c_latent_size,
)
from ultrares.kernels.ultrapixel_config import (
    CHECKPOINT_PREFIXES,
    INJECTION_POINTS,
    SMALL_PARITY_CONFIG,
    STAGE_C_BLOCKS,
    UltraPixelConfig,
)
from ultrares.kernels.ultrapixel_inr import fourier_encode, inr_query, make_coord_grid, modulate_base_weights
from ultrares.kernels.ultrapixel_norm import ScaleAwareNorm, channel_layer_norm, r_embedding, scale_value
from ultrares.kernels.ultrapixel_weights import (
    check_ultrapixel_state_dict,
    load_ultrapixel_modules,
    module_state_shapes,
    split_ultrapixel_state_dict,
    ultrapixel_checkpoint_shapes,
)
from ultrares.kernels.weights_file import check_weights_file, read_state_dict

# One TransInr_withnorm of the release (prefix module.{64|65}.{0|1}. stripped).
RELEASE_TABLE: dict[str, tuple[int, ...]] = {
    "wtokens": (128, 1024),
    "input_layer.weight": (1024, 2048, 1, 1),
    "input_layer.bias": (1024,),
    "tokenizer.posemb": (1024, 1024),
    "tokenizer.prefc.weight": (1024, 1024),
    "tokenizer.prefc.bias": (1024,),
    "transformer_encoder.layers.0.0.norm.weight": (1024,),
    "transformer_encoder.layers.0.0.norm.bias": (1024,),
    "transformer_encoder.layers.0.0.fn.to_q.1.weight": (1024, 1024),
    "transformer_encoder.layers.0.0.fn.to_q.1.bias": (1024,),
    "transformer_encoder.layers.0.0.fn.to_kv.1.weight": (2048, 1024),
    "transformer_encoder.layers.0.0.fn.to_kv.1.bias": (2048,),
    "transformer_encoder.layers.0.1.norm.weight": (1024,),
    "transformer_encoder.layers.0.1.norm.bias": (1024,),
    "transformer_encoder.layers.0.1.fn.net.0.weight": (1024, 1024),
    "transformer_encoder.layers.0.1.fn.net.0.bias": (1024,),
    "transformer_encoder.layers.0.1.fn.net.3.weight": (1024, 1024),
    "transformer_encoder.layers.0.1.fn.net.3.bias": (1024,),
    "base_params.wb0": (257, 1024),
    "base_params.wb1": (1025, 1024),
    "wtoken_postfc.wb0.0.weight": (1024,),
    "wtoken_postfc.wb0.0.bias": (1024,),
    "wtoken_postfc.wb0.1.weight": (256, 1024),
    "wtoken_postfc.wb0.1.bias": (256,),
    "wtoken_postfc.wb1.0.weight": (1024,),
    "wtoken_postfc.wb1.0.bias": (1024,),
    "wtoken_postfc.wb1.1.weight": (1024, 1024),
    "wtoken_postfc.wb1.1.bias": (1024,),
    "output_layer.weight": (2048, 1024, 1, 1),
    "output_layer.bias": (2048,),
    "mapp_t.mapper.weight": (4096, 64),
    "mapp_t.mapper.bias": (4096,),
    "hr_norm.mapping.mapper.weight": (4096, 64),
    "hr_norm.mapping.mapper.bias": (4096,),
    "hr_norm.alpha.weight": (2048, 2048, 1, 1),
    "hr_norm.alpha.bias": (2048,),
    "hr_norm.gamma.weight": (2048, 2048, 1, 1),
    "hr_norm.gamma.bias": (2048,),
    "toout.0.weight": (512, 4096),
    "toout.0.bias": (512,),
    "toout.2.weight": (2048, 512),
    "toout.2.bias": (2048,),
}


# helpers


def parity_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Parity fill: ``0.05 sin(0.7 a + phi_k)``, a row-major, phi_k = (sum(ord(key)) mod 997) / 97."""
    state = {}
    for key, shape in shapes.items():
        phi = (sum(ord(ch) for ch in key) % 997) / 97
        a = torch.arange(math.prod(shape), dtype=torch.float64)
        state[key] = (0.05 * torch.sin(0.7 * a + phi)).float().reshape(shape)
    return state


def parity_inputs(c: int, hr: tuple[int, int], lr: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Parity inputs: f = sin(0.3c + 0.5h + 0.7w) (B=1, HR), g = cos(0.2c + 0.9h - 0.4w) (LR)."""
    ch = torch.arange(c, dtype=torch.float64)[:, None, None]

    def grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.arange(h, dtype=torch.float64)[None, :, None], torch.arange(w, dtype=torch.float64)[None, None, :]

    y, x = grid(*hr)
    f = torch.sin(0.3 * ch + 0.5 * y + 0.7 * x).float()[None]
    y, x = grid(*lr)
    g = torch.cos(0.2 * ch + 0.9 * y - 0.4 * x).float()[None]
    return f, g


def parity_module(config: UltraPixelConfig) -> GuidanceFusionModule:
    with torch.device("meta"):
        module = GuidanceFusionModule(config)
    module.load_state_dict(parity_state_dict(module_state_shapes(config)), strict=True, assign=True)
    return module.eval()


def small_module(seed: int = 0) -> GuidanceFusionModule:
    return GuidanceFusionModule(SMALL_PARITY_CONFIG, generator=torch.Generator().manual_seed(seed)).eval()


def small_inputs(batch: int = 1, hr=(6, 8), lr=(3, 4), seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    c = SMALL_PARITY_CONFIG.ind
    f = torch.randn(batch, c, *hr, generator=gen)
    g = torch.randn(batch, c, *lr, generator=gen)
    t_emb = r_embedding(torch.rand(batch, generator=gen))
    return f, g, t_emb


# Parity with the official module


@pytest.mark.parametrize(
    ("config", "hr", "lr", "mean", "std", "abs_sum", "head", "last"),
    [
        pytest.param(
            SMALL_PARITY_CONFIG, (6, 8), (3, 4), 0.248487, 1.786992, 4767.3276,
            [-1.224902, -0.681023, 0.793733, 1.942607], 0.79261, id="small",
        ),
        pytest.param(
            UltraPixelConfig(), (48, 48), (24, 24), 0.004760, 1.997823, 8.2945e6,
            [-1.173084, -0.9481, -0.90037, -1.468684], -1.863358, id="full",
        ),
    ],
)  # fmt: skip
def test_parity_with_official(config, hr, lr, mean, std, abs_sum, head, last):
    module = parity_module(config)
    f, g = parity_inputs(config.ind, hr, lr)
    with torch.no_grad():
        out = module(f, g, r_embedding(torch.tensor([0.5])))
    assert out.shape == f.shape
    assert out.mean().item() == pytest.approx(mean, abs=2e-6)
    assert out.std().item() == pytest.approx(std, rel=1e-4)
    assert out.abs().sum().item() == pytest.approx(abs_sum, rel=1e-4)
    assert out[0, :4, 0, 0].tolist() == pytest.approx(head, rel=1e-4)
    assert out[0, -1, -1, -1].item() == pytest.approx(last, rel=1e-4)


# Released key table and checkpoint loading


def test_state_dict_matches_release_table():
    with torch.device("meta"):
        module = GuidanceFusionModule()
    got = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert got == RELEASE_TABLE
    assert module_state_shapes() == RELEASE_TABLE


def test_full_checkpoint_layout():
    shapes = ultrapixel_checkpoint_shapes()
    assert len(shapes) == 168
    assert {k[:5] for k in shapes} == {"64.0.", "64.1.", "65.0.", "65.1."}
    assert sum(math.prod(s) for s in shapes.values()) == 105_524_224
    with torch.device("meta"):
        modules = build_ultrapixel_modules()
    mapped = {CHECKPOINT_PREFIXES[p] + k: tuple(v.shape) for p, m in modules.items() for k, v in m.state_dict().items()}
    assert mapped == shapes
    assert set(STAGE_C_BLOCKS) == set(INJECTION_POINTS) == set(CHECKPOINT_PREFIXES)


def synthetic_checkpoint(config=SMALL_PARITY_CONFIG) -> dict[str, torch.Tensor]:
    """A released-style state dict: ``module.{64|65}.{0|1}.*`` keys, bf16."""
    modules = build_ultrapixel_modules(config, generator=torch.Generator().manual_seed(3))
    return {
        "module." + CHECKPOINT_PREFIXES[p] + k: v.to(torch.bfloat16)
        for p, m in modules.items()
        for k, v in m.state_dict().items()
    }


@pytest.mark.parametrize(
    ("writer", "fmt"),
    [
        ("torch_zip", "torch_zip"),  # what the release ships, under a .safetensors name
        ("torch_legacy", "torch_pickle"),
        ("safetensors", "safetensors"),  # the converted community file
    ],
)
def test_checkpoint_roundtrip_strict(tmp_path, writer, fmt):
    state = synthetic_checkpoint()
    path = tmp_path / "ultrapixel_t2i.safetensors"
    if writer == "torch_zip":
        torch.save(state, path)
    elif writer == "torch_legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        from safetensors.torch import save_file

        save_file({k[len("module.") :]: v for k, v in state.items()}, str(path))
    assert check_weights_file(path, folder=str(tmp_path)) == fmt
    loaded = read_state_dict(path, folder=str(tmp_path))
    assert check_ultrapixel_state_dict(loaded, SMALL_PARITY_CONFIG) is None
    modules, configs = load_ultrapixel_modules(path, SMALL_PARITY_CONFIG, dtype=torch.float32)
    assert configs == {p: SMALL_PARITY_CONFIG for p in INJECTION_POINTS}
    assert list(modules) == list(INJECTION_POINTS) and not any(p.requires_grad for p in modules.parameters())
    for point, local in split_ultrapixel_state_dict(state).items():
        assert len(local) == 42
        own = modules[point].state_dict()
        assert own.keys() == local.keys()
        for key, value in local.items():
            assert own[key].dtype == torch.float32
            assert torch.equal(own[key], value.float()), (point, key)
        modules[point].load_state_dict({k: v.float() for k, v in local.items()}, strict=True)


def test_wrong_checkpoint_is_rejected_with_key_names(tmp_path):
    state = synthetic_checkpoint()
    del state["module.65.1.toout.2.bias"]
    state["module.64.0.extra.weight"] = torch.zeros(3)
    state["module.64.1.wtokens"] = torch.zeros(7, 32)
    message = check_ultrapixel_state_dict(state, SMALL_PARITY_CONFIG)
    assert message is not None
    assert "missing key: 65.1.toout.2.bias" in message
    assert "unexpected key: 64.0.extra.weight" in message
    assert "wrong shape: 64.1.wtokens: expected (16, 32), got (7, 32)" in message
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="65.1.toout.2.bias"):
        load_ultrapixel_modules(path, SMALL_PARITY_CONFIG)
    # A small checkpoint against the full config: nearly every key has the wrong shape.
    with pytest.raises(ValueError, match=r"wrong shape: 64\.0\.wtokens: expected \(128, 1024\)") as err:
        load_ultrapixel_modules(synthetic_checkpoint(), UltraPixelConfig())
    assert re.search(r"\.\.\. and 15\d more \(wrong shape\)", str(err.value))  # 10 listed, then a count


def test_one_loader_reads_the_sizes_from_the_file_when_no_config_is_given(tmp_path):
    state = synthetic_checkpoint()
    path = tmp_path / "ultrapixel_t2i.safetensors"
    torch.save(state, path)
    inferred, configs = load_ultrapixel_modules(path)
    given, _ = load_ultrapixel_modules(path, SMALL_PARITY_CONFIG)
    # The head count is not stored: heads of the release's 32 dims, so one head at f_dim 32.
    assert configs == {p: dataclasses.replace(SMALL_PARITY_CONFIG, n_head=1) for p in INJECTION_POINTS}
    for point in INJECTION_POINTS:
        ours, theirs = inferred[point].state_dict(), given[point].state_dict()
        assert ours.keys() == theirs.keys()
        assert all(v.dtype == torch.bfloat16 and torch.equal(v, theirs[k]) for k, v in ours.items()), point


def test_unknown_file_format_is_rejected(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="neither"):
        read_state_dict(path, folder=str(tmp_path))


# Behaviour of the module


def test_zero_output_leaves_feature_unchanged():
    """u = x(2 + a_s) + b_s is exactly 0 for a_s = -2, b_s = 0, so x + s u == x bit for bit."""
    module = small_module()
    c = SMALL_PARITY_CONFIG.ind
    with torch.no_grad():
        module.hr_norm.mapping.mapper.weight.zero_()
        module.hr_norm.mapping.mapper.bias.copy_(torch.cat([torch.full((c,), -2.0), torch.zeros(c)]))
    f, g, t_emb = small_inputs()
    with torch.no_grad():
        u = module(f, g, t_emb)
    assert torch.count_nonzero(u) == 0
    for s in (1.0, decoder_guide_scale(96, 96)):
        assert torch.equal(inject_guidance(f, u, s), f)


def test_inputs_are_not_mutated_and_reuse_of_g_up_is_exact():
    module = small_module()
    f, g, t_emb = small_inputs(batch=2)
    copies = [t.clone() for t in (f, g, t_emb)]
    with torch.no_grad():
        g_up = module.upscale_guidance(g, f.shape[-2:])
        u_once = module(f, g, t_emb)
        u_reuse = module(f, g, t_emb, g_up=g_up)
        x = inject_guidance(f, u_once, 0.5)
    for before, after in zip(copies, (f, g, t_emb)):
        assert torch.equal(before, after)
    assert torch.equal(u_once, u_reuse)
    assert torch.allclose(x, f + 0.5 * u_once)


def test_batch_samples_are_independent():
    module = small_module()
    f, g, t_emb = small_inputs(batch=2)
    with torch.no_grad():
        both = module(f, g, t_emb)
        second = module(f[1:], g[1:], t_emb[1:])
    assert torch.allclose(both[1:], second, atol=1e-5)


def test_inr_with_zero_output_layer_reproduces_lr_grid():
    """g' = output_layer(INR) + nearest(g): with the INR branch zeroed, g' is g at the LR size."""
    module = small_module()
    with torch.no_grad():
        module.output_layer.weight.zero_()
        module.output_layer.bias.zero_()
        _, g, _ = small_inputs(lr=(3, 4))
        assert torch.equal(module.upscale_guidance(g, (3, 4)), g)
        g_hr = module.upscale_guidance(g, (6, 8))
    assert torch.equal(g_hr, g.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


def test_inr_is_consistent_across_sizes():
    """Centres of the LR grid are the middle sub-pixels of a 3x grid: g' agrees there."""
    module = small_module()
    _, g, _ = small_inputs(lr=(3, 4))
    with torch.no_grad():
        g_lr = module.upscale_guidance(g, (3, 4))
        g_3x = module.upscale_guidance(g, (9, 12))
        theta = module.implicit_weights(g)
        z_lr, z_3x = inr_query(theta, (3, 4)), inr_query(theta, (9, 12))
    assert torch.allclose(z_3x[:, 1::3, 1::3], z_lr, atol=1e-5)
    assert torch.allclose(g_3x[:, :, 1::3, 1::3], g_lr, atol=1e-5)
    assert not torch.allclose(g_3x[:, :, 0::3, 0::3], g_lr, atol=1e-2)  # the other sub-pixels differ


def test_coordinate_grid_and_fourier_features():
    grid = make_coord_grid((2, 4))
    assert grid.shape == (2, 4, 2)
    assert grid[:, 0, 0].tolist() == [-0.5, 0.5]  # rows first
    assert grid[0, :, 1].tolist() == [-0.75, -0.25, 0.25, 0.75]
    gamma = fourier_encode(torch.zeros(5, 2))
    assert gamma.shape == (5, 256)
    assert torch.equal(gamma[:, :128], torch.ones(5, 128)) and torch.equal(gamma[:, 128:], torch.zeros(5, 128))
    one = fourier_encode(torch.tensor([[0.25, 0.0]]), n_freq=3, sigma=4.0)  # freqs 1, 2, 4
    v = torch.tensor([0.25, 0.5, 1.0, 0.0, 0.0, 0.0])
    assert torch.allclose(one[0], torch.cat([torch.cos(math.pi * v), torch.sin(math.pi * v)]), atol=1e-6)


def test_implicit_weights_modulation():
    gen = torch.Generator().manual_seed(5)
    wb_base = torch.randn(5, 6, generator=gen)  # d_in 4, d_out 6
    m = torch.randn(2, 4, 3, generator=gen)  # 3 weight tokens
    wb = modulate_base_weights(wb_base, m)
    assert wb.shape == (2, 5, 6)
    assert torch.equal(wb[:, -1], wb_base[-1].expand(2, 6))  # bias row unmodulated
    assert torch.allclose(wb[:, :-1].norm(dim=1), torch.ones(2, 6))  # unit columns over the input
    for j in range(6):  # column j uses token j mod 3
        expect = wb_base[:-1, j] * m[:, :, j % 3]
        assert torch.allclose(wb[:, :-1, j], expect / expect.norm(dim=1, keepdim=True))
    with pytest.raises(ValueError, match="multiple"):
        modulate_base_weights(wb_base, torch.randn(1, 4, 4))


def test_scale_aware_norm_formula():
    san = ScaleAwareNorm(8, 64)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        san.mapping.mapper.weight.copy_(torch.randn(16, 64, generator=gen))
        san.mapping.mapper.bias.copy_(torch.randn(16, generator=gen))
    u = channel_layer_norm(torch.randn(2, 8, 48, 48, generator=gen))
    e_s = r_embedding(torch.full((2,), scale_value(48, 48)))
    a_s, b_s = san.mapping.mapper(e_s)[:, :, None, None].chunk(2, dim=1)
    with torch.no_grad():
        assert torch.allclose(san(u), u * (2 + a_s) + b_s, atol=1e-5)
    assert torch.allclose(u.mean(1), torch.zeros(2, 48, 48), atol=1e-5)


def test_lr_position_table_limit():
    module = small_module()
    f = torch.zeros(1, SMALL_PARITY_CONFIG.ind, 66, 64)
    g = torch.zeros(1, SMALL_PARITY_CONFIG.ind, 33, 32)  # 1056 > 1024 LR tokens
    with pytest.raises(ValueError, match="1056 pixels"):
        module(f, g, r_embedding(torch.tensor([0.5])))


def test_seeded_initialisation():
    a, b, c = small_module(0), small_module(0), small_module(1)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), key
    assert not torch.equal(a.wtokens, c.wtokens)


def test_bf16_weights_with_fp32_time_embedding():
    module = small_module().to(torch.bfloat16)
    f, g, t_emb = small_inputs()
    with torch.no_grad():
        u16 = module(f.bfloat16(), g.bfloat16(), t_emb)
        u32 = small_module()(f, g, t_emb)
    assert u16.dtype == torch.bfloat16 and torch.isfinite(u16).all()
    assert (u16.float() - u32).abs().mean() < 0.1 * u32.abs().mean()


# Scalar rules (official inference/utils.py, model_4stage_lite.py, inr_fea_res_lite.py)


def test_decoder_scale_rule():
    assert decoder_guide_scale(48, 48) == 0.3
    assert decoder_guide_scale(72, 72) == 0.5
    assert decoder_guide_scale(96, 96) == 0.7
    assert decoder_guide_scale(71, 73) == 0.3  # 5183 < 72^2
    assert decoder_guide_scale(60, 120) == 0.5  # 7200
    assert decoder_guide_scale(128, 128) == 0.7
    assert guide_scale("E0", 96, 96) == guide_scale("E1", 48, 48) == 1.0
    assert guide_scale("D1", 96, 96) == 0.7
    with pytest.raises(ValueError):
        guide_scale("M0", 48, 48)
    assert [decoder_guide_scale(*stage_c_latent_size(p, p)) for p in (2048, 3072, 4096)] == [0.3, 0.5, 0.7]


def test_scale_values_and_sizes():
    assert scale_value(48, 48) == pytest.approx(1.10368, abs=1e-5)
    assert scale_value(72, 72) == pytest.approx(1.16004, abs=1e-5)
    assert scale_value(96, 96) == pytest.approx(1.19842, abs=1e-5)
    assert scale_value(60, 120) == pytest.approx(1.18210, abs=1e-5)
    assert scale_value(24, 24) == 1.0
    assert stage_c_latent_size(4096, 4096) == (96, 96)
    assert stage_c_latent_size(2560, 5120) == (60, 120)
    assert lr_pixel_size(2560, 5120) == (704, 1440)
    assert stage_c_latent_size(*lr_pixel_size(2560, 5120)) == (17, 34)
    assert lr_pixel_size(4096, 4096) == (1024, 1024)
    assert stage_c_latent_size(1024, 1024) == (24, 24)


def test_r_embedding():
    e = r_embedding(torch.tensor([0.0, 0.5]))
    assert e.shape == (2, 64)
    assert torch.equal(e[0], torch.cat([torch.zeros(32), torch.ones(32)]))
    assert e[1, 0].item() == pytest.approx(math.sin(5000.0), abs=1e-4)
    assert e[1, 63].item() == pytest.approx(math.cos(5000.0 * 1e-4), abs=1e-6)
