"""Pixelsmith's per-patch conditioning: the guider's conds cut to each batch of patch windows.

Per patch batch the denoiser calls the guider itself, ``model_wrap(y, σ, model_options, seed)``,
so every guider, model patch and wrapper keeps working. Conditioning that depends on *where* the
patch is is fixed **before** that call, by handing the guider patch-specific copies of its
processed conds (``guider.conds``, restored in ``finally``) in which

* every spatial model cond (``CONDNoiseShape`` at the latent's size: ``c_concat`` of inpainting /
  IP2P / concat models, ``noise_concat``, ...) is sliced to the patch windows, patch-major;
* ControlNet hints (plain ``comfy.controlnet.ControlNet`` chains) are resized once to the full
  latent as ComfyUI would, and each per-patch copy of the ControlNet gets its windows;
* on SDXL-class models only (``comfy.model_base.SDXL``), the crop fields of the ADM vector ``y``
  (``[pooled | h | w | crop_h | crop_w | target_h | target_w]``, 256 each) are re-embedded with the
  model's own ``embedder`` per patch (Pixelsmith's official pipeline sets it at Thanos-DB/Pixelsmith@28c992b
  ``pixelsmith_pipeline.py:1871-1876``): ``fixed`` = (top, left)·ratio, ``official`` =
  (left, left)·ratio as the official code does, ``zero`` = leave the conditioning's crop (0).
  ``original_size``/``target_size`` stay the full image, as in the official code.

This replaces an APPLY_MODEL wrapper: by the time such a wrapper runs, ComfyUI has already cut
spatial conds to the patch *size* at offset (0, 0) (``CONDNoiseShape.process_cond``), so the right
window can no longer be recovered there. Conditioning the sampler cannot place per patch
(regional ``area``/``mask`` conds, T2I adapters, Control-LoRAs, ControlNets with extra concat
inputs) is refused with a clear error instead of being silently squashed into every patch.
"""
from __future__ import annotations

import comfy.conds
import comfy.controlnet
import comfy.model_base
import comfy.utils
import torch

from ..kernels.tiling import PatchBox
from ._stage import model_latent_px


def _slice_patch_major(t: torch.Tensor, boxes: list[PatchBox], batch: int) -> torch.Tensor:
    """``(b, ..., H, W)`` → ``(n·B, ..., h, w)``: each window, repeated to the latent batch B."""
    parts = [comfy.utils.repeat_to_batch_size(t[..., r, c], batch) for r, c in (b.slices for b in boxes)]
    return torch.cat(parts, dim=0)


class PatchConditioning:
    """Builds the guider's conds for a batch of patch windows (see module docstring)."""

    def __init__(self, conds: dict, inner_model: comfy.model_base.BaseModel, latent_hw: tuple[int, int], batch: int,
                 crop_mode: str):
        self.conds = conds
        self.latent_hw = latent_hw
        self.batch = batch
        for name, items in conds.items():
            for c in items:
                if c.get("area") is not None or c.get("mask") is not None:
                    raise ValueError(
                        f"Pixelsmith sampler: the {name} conditioning has an area or mask (regional "
                        "prompting); it cannot be placed per patch. Remove ConditioningSetArea/"
                        "SetMask before this sampler.")
                if c.get("reference_latents") is not None or "ref_latents" in c.get("model_conds", {}):
                    raise ValueError(
                        f"Pixelsmith sampler: the {name} conditioning carries reference latents (ReferenceLatent: "
                        "Flux Kontext, Flux.2 or Qwen-Image edit), which show the model the whole picture and cannot "
                        "be cut per patch. Use them on the base stage only, with plain text conditioning here.")
                control = c.get("control")
                while control is not None:
                    if (not isinstance(control, comfy.controlnet.ControlNet)
                            or isinstance(control, comfy.controlnet.ControlLora)
                            or control.extra_concat_orig):
                        raise ValueError(
                            f"Pixelsmith sampler: the {name} conditioning carries a "
                            f"{type(control).__name__}, whose hint cannot be sliced per patch (only "
                            "plain ControlNets can). Apply it on the base stage only.")
                    control = control.previous_controlnet
        self._full_hints: dict[int, torch.Tensor] = {}  # id(control) → hint at the full latent size
        self.embedder = None
        if crop_mode != "zero" and isinstance(inner_model, comfy.model_base.SDXL):
            self.embedder = inner_model.embedder  # Timestep(256), SDXL micro-conditioning
        self.crop_mode = crop_mode
        # ComfyUI encodes SDXL's default width/height as latent × 8 (samplers.encode_model_conds);
        # crop coordinates use the same ratio unless the latent format says otherwise.
        self.px_per_latent = model_latent_px(inner_model) if self.embedder is not None else None

    def _crop_y(self, y: torch.Tensor, boxes: list[PatchBox]) -> torch.Tensor:
        """ADM ``(b, D)`` → ``(n·B, D)`` with per-window crop_h/crop_w embeddings."""
        d = y.shape[1]
        crop_at = d - 4 * 256  # [.. | crop_h | crop_w | target_h | target_w]
        base = comfy.utils.repeat_to_batch_size(y, self.batch)
        out = []
        r = self.px_per_latent
        for b in boxes:
            crop_h = b.top * r if self.crop_mode == "fixed" else b.left * r  # official: (j−p)·8 twice
            crop_w = b.left * r
            emb = self.embedder(torch.tensor([float(crop_h), float(crop_w)]))  # (2, 256)
            yy = base.clone()
            yy[:, crop_at:crop_at + 512] = emb.reshape(1, 512).to(yy.device, yy.dtype)
            out.append(yy)
        return torch.cat(out, dim=0)

    def _control_for_boxes(self, control: comfy.controlnet.ControlNet | None,
                           boxes: list[PatchBox]) -> comfy.controlnet.ControlNet | None:
        """Copy of a ControlNet chain whose hints are the patch windows of the full-size hint.

        ComfyUI resizes a hint to the model input (``common_upscale``, "center" crop) on first
        use; here that is done once for the full latent, then each window is cut out (in the
        hint's own px: latent px × compression ratio) so every patch sees its part of the hint.
        """
        if control is None:
            return None
        H, W = self.latent_hw
        ratio = control.compression_ratio
        if control.vae is not None:
            ratio *= control.vae.spacial_compression_encode()
        full = self._full_hints.get(id(control))
        if full is None:
            full = comfy.utils.common_upscale(control.cond_hint_original, W * ratio, H * ratio,
                                              control.upscale_algorithm, "center")
            self._full_hints[id(control)] = full
        parts = [comfy.utils.repeat_to_batch_size(
            full[..., b.top * ratio:(b.top + b.height) * ratio, b.left * ratio:(b.left + b.width) * ratio],
            self.batch) for b in boxes]
        c = control.copy()
        c.cond_hint_original = torch.cat(parts, dim=0)  # (n·B, 3, h·r, w·r), patch-major
        c.timestep_range = control.timestep_range  # set by pre_run on the original
        c.model_sampling_current = control.model_sampling_current
        c.previous_controlnet = self._control_for_boxes(control.previous_controlnet, boxes)
        return c

    def for_boxes(self, boxes: list[PatchBox]) -> dict:
        """The guider's conds for this batch of windows (copies; the originals are untouched)."""
        out = {}
        for name, items in self.conds.items():
            new_items = []
            for c in items:
                c = c.copy()
                model_conds = dict(c.get("model_conds", {}))
                for key, cond in model_conds.items():
                    if (isinstance(cond, comfy.conds.CONDNoiseShape) and cond.cond.dim() >= 4
                            and tuple(cond.cond.shape[-2:]) == self.latent_hw):
                        model_conds[key] = cond._copy_with(_slice_patch_major(cond.cond, boxes, self.batch))
                y = model_conds.get("y")
                if (self.embedder is not None and isinstance(y, comfy.conds.CONDRegular)
                        and y.cond.dim() == 2 and y.cond.shape[1] >= 1536):
                    model_conds["y"] = y._copy_with(self._crop_y(y.cond, boxes))
                c["model_conds"] = model_conds
                if c.get("control") is not None:
                    c["control"] = self._control_for_boxes(c["control"], boxes)
                new_items.append(c)
            out[name] = new_items
        return out
