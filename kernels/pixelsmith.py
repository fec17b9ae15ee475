"""Pixelsmith (Tragakis et al., NeurIPS 2024): the Slider and guided patch denoising, in ComfyUI's k-space.

The whole patch sampler as one k-diffusion-style function, :func:`sample_pixelsmith`; its
operators are in ``kernels/pixelsmith_ops.py``. Behaviour follows the official pipeline,
Thanos-DB/Pixelsmith@28c992b ``pixelsmith_pipeline.py`` (the patch loop at lines 1722-1948, the
guidance latents at 1716-1720). Conventions:

* latents are ``(B, C, H, W)`` in k-space, ``x_k = x_vp / sqrt(ā)``, ``σ = sqrt((1 - ā) / ā)``;
* ``sigmas`` is a ComfyUI/k-diffusion schedule of ``N + 1`` values, normally ending in 0
  (``ddim_uniform`` with 50 steps reproduces the official DDIM timesteps 981, 961, ..., 1);
* the per-pixel timestep map τ is stored as the integer index ``k`` into ``sigmas`` (``τ = T[k]``),
  so "furthest behind" (max τ) is the *smallest* index and ``k == N`` means finished;
* ``S`` (``slider``) is the number of guided steps: phase fusion with ``G[k]`` for ``k < S`` and the
  chessboard with ``G[k + 1]`` for ``k < S - 1``, as the official code does (lines 1772 and 1924).

Nothing here imports ComfyUI; randomness comes only from an explicit ``torch.Generator``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .pixelsmith_ops import (
    chessboard_mask,
    draw_chessboard_coins,
    guidance_patch,
    phase_fusion,
    revert,
    round_grid,
    select_patches,
    take_disjoint,
    write_back,
)
from .tiling import PatchBox

Denoiser = Callable[..., torch.Tensor]
"""``model(y, sigma, boxes=boxes, **extra_args) -> x0`` for a batch of patch windows."""


class _PatchRun:
    """Per-run state of the patch sampler: the full-size latents and the fixed inputs.

    ``x`` (the live latent), ``x_prev`` (the round's snapshot) and ``tau`` (the step-index map)
    stay on the storage device of ``z_up``; only patches move to ``device``.
    """

    def __init__(self, model: Denoiser, extra_args: dict, x: torch.Tensor, z_up: torch.Tensor,
                 noise: torch.Tensor, sigmas: list[float], alphas: list[float], slider: int, band: int,
                 generator: torch.Generator, device: torch.device):
        self.model, self.extra_args = model, extra_args
        self.z_up, self.noise = z_up, noise
        self.sigmas, self.alphas, self.S, self.band = sigmas, alphas, slider, band
        self.generator, self.device = generator, device
        self.x = x.clone()  # a new tensor: the caller's x stays untouched
        self.x_prev = self.x.clone()
        H, W = x.shape[-2:]
        self.tau = torch.zeros(H, W, dtype=torch.int32, device=z_up.device)  # (H, W)

    def _gather(self, t: torch.Tensor, boxes: list[PatchBox]) -> torch.Tensor:
        """``(n, ..., h, w)``: the windows of ``t`` on the processing device."""
        return torch.stack([t[..., r, c].to(self.device, non_blocking=True) for r, c in (b.slices for b in boxes)])

    def _guidance(self, k: int, boxes: list[PatchBox]) -> torch.Tensor:
        """``G[k]`` on the windows, ``(n, B, C, h, w)``."""
        return torch.stack([guidance_patch(self.z_up, self.noise, self.sigmas[k], b, self.alphas[k])
                            .to(self.device, non_blocking=True) for b in boxes])

    def step(self, k: int, boxes: list[PatchBox]) -> tuple[torch.Tensor, int]:
        """Advance the pixels of ``boxes`` still at step ``k`` by one step.

        One pass of the official loop body after the patch choice (``pixelsmith_pipeline.py:1747-1948``).
        Returns the patches' x0 prediction and the number of pixels advanced.
        """
        n = len(boxes)
        B, C = self.x.shape[:2]
        ph, pw = boxes[0].height, boxes[0].width
        sigma, sigma_next = self.sigmas[k], self.sigmas[k + 1]
        y = x_patch = self._gather(self.x, boxes)  # (n, B, C, ph, pw); y is rebound, never written in place
        y_prev = self._gather(self.x_prev, boxes)
        m = (self._gather(self.tau, boxes) == k).view(n, 1, 1, ph, pw)

        # Phase fusion with G[k][R] (k < S), over the whole patch, *before* the revert. For k >= S
        # the official FFT round trip is an identity up to rounding: skipped.
        if k < self.S:
            y = phase_fusion(y, self._guidance(k, boxes))
        # Coins drawn for every patch, guided or not, so patch positions for a given seed do not
        # depend on the slider.
        sd, sl = draw_chessboard_coins(n, self.generator)
        # Revert advanced pixels to the snapshot (raw, un-fused values).
        y = revert(y, y_prev, m)

        # Denoise at σ_k, Euler (DDIM η=0) to σ_{k+1}.
        y_in = y.reshape(n * B, C, ph, pw)
        x0 = self.model(y_in, y_in.new_full((n * B,), sigma), boxes=list(boxes), **self.extra_args)
        x0 = x0.to(device=y.device, dtype=y.dtype).reshape(y.shape)
        y_next = x0 if sigma_next == 0.0 else y + (sigma_next - sigma) / sigma * (y - x0)

        # Chessboard guidance with G[k+1][R] (k < S - 1).
        if k < self.S - 1:
            M = chessboard_mask(ph, pw, sd, sl, device=self.device).view(n, 1, 1, ph, pw)
            y_next = torch.where(M, self._guidance(k + 1, boxes), y_next)

        # Write back with the band average, advance τ where m = 1.
        new_patch = write_back(x_patch, y_next, m, self.band)
        for i, b in enumerate(boxes):
            r, c = b.slices
            self.x[..., r, c] = new_patch[i].to(self.x.device, self.x.dtype)
            self.tau[r, c] += m[i, 0, 0].to(self.tau.device, torch.int32)
        return x0, int(m.sum())


def _check_inputs(x: torch.Tensor, z_up: torch.Tensor, noise: torch.Tensor, sigmas: Sequence[float],
                  slider: int, mode: str, patch_size: int, band: int, patch_batch: int,
                  signal_scales: Sequence[float] | None) -> tuple[list[float], list[float], int]:
    """Validated ``(sigmas, α_k, S)``; clear errors that name the argument."""
    if z_up.dim() != 4 or noise.shape != z_up.shape or x.shape != z_up.shape:
        raise ValueError(
            f"sample_pixelsmith: x, z_up and noise must all be (B, C, H, W) of one shape, got "
            f"{tuple(x.shape)}, {tuple(z_up.shape)} and {tuple(noise.shape)}")
    if mode not in ("faithful", "fast"):
        raise ValueError(f"sample_pixelsmith: mode must be 'faithful' or 'fast', got {mode!r}")
    if patch_size < 1 or band < 0 or patch_batch < 1:
        raise ValueError(
            f"sample_pixelsmith: need patch_size >= 1, band >= 0, patch_batch >= 1; got "
            f"{patch_size}, {band}, {patch_batch}")
    if slider < 0:
        raise ValueError(f"sample_pixelsmith: slider must be >= 0, got {slider}")
    sigma_list = [float(s) for s in sigmas]
    N = len(sigma_list) - 1
    if N < 1:
        raise ValueError("sample_pixelsmith: sigmas must hold at least 2 values")
    if min(sigma_list[:-1]) <= 0.0:
        raise ValueError("sample_pixelsmith: only the last sigma may be 0 (Euler divides by σ_k)")
    alphas = [1.0] * (N + 1) if signal_scales is None else [float(a) for a in signal_scales]
    if len(alphas) != N + 1:
        raise ValueError(
            f"sample_pixelsmith: signal_scales needs one value per sigma ({N + 1}), got {len(alphas)}")
    # Deviation: the official code requires 1 <= S <= 50. S > N is clamped (every step guided) so
    # a node can keep its slider when the step count changes; S = 0 is allowed and means unguided
    # patch sampling from G[0].
    return sigma_list, alphas, min(slider, N)


AUTO_SLIDER = -1
PAPER_SLIDER_FRACTION = (0.4, 0.6)  # of the steps: README 20 for ×2 (1024 → 2048), 30 for ×4 (→ 4096), of 50


def auto_slider(steps: int, latent_hw: tuple[int, int], patch_size: int) -> int:
    """The paper's Slider as a fraction of ``steps``: 40 % up to 2× the native side, 60 % beyond.

    Thanos-DB/Pixelsmith@28c992b ``README.md`` chains 1024² → 2048² with ``slider=20`` and → 4096²
    with ``slider=30``, both of 50 steps; the native side is the patch (``patch_size`` latent px,
    the model's training size), so a stage whose larger latent side is at most twice the patch
    side is a first ×2 stage. Scaling with ``steps`` keeps the guided share when the step count
    changes (a fixed 20 of 20 steps would guide every step).
    """
    fraction = PAPER_SLIDER_FRACTION[0] if max(latent_hw) <= 2 * patch_size else PAPER_SLIDER_FRACTION[1]
    return round(fraction * steps)


def start_latent(z_up: torch.Tensor, noise: torch.Tensor, sigma_0: float, alpha_0: float = 1.0) -> torch.Tensor:
    """``G[0] = α_0·z_up + σ_0·n``: the noised upscaled image every Pixelsmith run starts from."""
    return alpha_0 * z_up + sigma_0 * noise


@torch.no_grad()
def sample_pixelsmith(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    extra_args: dict | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
    *,
    z_up: torch.Tensor,
    noise: torch.Tensor,
    slider: int,
    generator: torch.Generator,
    patch_size: int = 128,
    band: int = 10,
    mode: str = "faithful",
    patch_batch: int = 1,
    device: torch.device | str | None = None,
    signal_scales: Sequence[float] | None = None,
) -> torch.Tensor:
    """Pixelsmith patch sampler with the Slider (Tragakis et al., 2024, paper Fig. 3; official loop above).

    A k-diffusion sampler. From the start ``x`` (normally ``G[0]``, :func:`start_latent`) it
    repeats, until every pixel has taken all ``N`` steps: pick window(s) R around pixels furthest
    behind, phase-fuse with ``G[k][R]`` if ``k < S``, revert already-advanced pixels to the round
    snapshot, denoise at ``σ_k``, Euler step to ``σ_{k+1}`` (= DDIM η=0; ``σ_{k+1} = 0`` gives
    x0), chessboard-replace with ``G[k+1][R]`` if ``k < S - 1``, write back with the 50/50 band
    average, advance τ. Returns the final latent (``x0`` when the schedule ends in 0).

    Args:
        model: ``model(y, sigma, boxes=boxes, **extra_args) -> x0``. ``y`` is ``(n·B, C, h, w)``
            on ``device``, patch-major (rows ``i·B .. i·B + B - 1`` belong to ``boxes[i]``),
            ``sigma`` is ``(n·B,)`` holding one value, ``boxes`` the ``n`` windows (for slicing
            spatial conditioning and SDXL crop coords).
        x: the start, ``(B, C, H, W)``; not modified.
        sigmas: ``N + 1`` decreasing sigmas (ComfyUI ``ddim_uniform`` for the official timesteps).
        extra_args: passed on to every ``model`` call.
        callback: called after each ``model`` call with a dict: ``x`` (live full latent, read
            only), ``i`` (step index k of the windows just denoised), ``sigma`` and ``sigma_hat``
            (σ_k), ``denoised`` (x0 of the patches), ``boxes``, ``tau`` (live step-index map,
            read only), ``patches`` (windows done), ``progress`` (exact fraction of pixel-steps
            done). A callback that raises stops the run (e.g. ComfyUI's interrupt check).
        disable: unused (no progress bar here), for the k-diffusion signature.
        z_up: upscaled guidance latent, ``(B, C, H, W)`` in k-space; stays on its device, as do
            the full-size state tensors.
        noise: unit Gaussian ``n`` of the same shape, shared by every ``G[k]``.
        slider: S, the number of guided steps, clamped to ``[0, N]``; 0 = no guidance at all.
        generator: the only source of randomness (patch centres, chessboard coins).
        patch_size: window side P in latent px (official 128), clamped to the latent's height and
            width so small latents work (a P ≥ H, W run is then a plain full-latent sampler).
        band: half-width of the averaging band in latent px (official 10).
        mode: ``"faithful"``: one patch per ``model`` call, official random order.
            ``"fast"``: each round is covered by a grid of abutting windows at an offset drawn
            anew every round (:func:`round_grid`), taken in random order, up to ``patch_batch``
            disjoint windows per call; same guidance, mask, revert and band. About half the
            windows of ``"faithful"`` per step.
        patch_batch: patches per call in ``"fast"`` mode (ignored, i.e. 1, in ``"faithful"``).
        device: where patches are processed and denoised (default: ``z_up.device``).
        signal_scales: ``α_k`` for each sigma, the scale of the clean latent in the noisy one,
            ``x_k = α_k·z + σ_k·n`` (default all 1: k-space / ε- and v-prediction models;
            rectified flow uses ``α_k = 1 - σ_k``). Guidance is ``G[k] = α_k·z_up + σ_k·n``. The
            Euler step on ``(x - x0)/σ`` is the DDIM(η=0) step in both parameterisations.
    """
    sigma_list, alphas, S = _check_inputs(x, z_up, noise, sigmas, slider, mode, patch_size, band,
                                          patch_batch, signal_scales)
    N = len(sigma_list) - 1
    device = torch.device(device) if device is not None else z_up.device
    run = _PatchRun(model, {} if extra_args is None else extra_args, x, z_up, noise, sigma_list, alphas, S,
                    band, generator, device)
    H, W = x.shape[-2:]
    patch_hw = (min(patch_size, H), min(patch_size, W))
    k_min, left_in_round = 0, H * W  # smallest step index, pixels still at it
    queue: list[PatchBox] = []  # fast mode: windows of the current round not yet taken
    patches = 0

    while k_min < N:
        k = k_min
        if mode == "faithful":
            boxes = select_patches(run.tau.cpu(), k, patch_hw, 1, generator)  # no copy on CPU
        else:
            if not queue:
                queue = round_grid((H, W), patch_hw, generator)
            boxes = take_disjoint(queue, patch_batch, lambda b, k=k: bool((run.tau[b.slices] == k).any()))
        x0, advanced = run.step(k, boxes)
        left_in_round -= advanced
        patches += len(boxes)
        if left_in_round == 0:  # a new round when every pixel shares the same step: snapshot x
            k_min, left_in_round = k_min + 1, H * W
            queue = []
            if k_min < N:
                run.x_prev.copy_(run.x)
        if callback is not None:
            callback({"x": run.x, "i": k, "sigma": sigma_list[k], "sigma_hat": sigma_list[k], "denoised": x0,
                      "boxes": list(boxes), "tau": run.tau, "patches": patches,
                      "progress": (k_min * H * W + (H * W - left_in_round)) / (N * H * W)})
    return run.x
