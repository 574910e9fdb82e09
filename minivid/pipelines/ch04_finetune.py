"""Chapter 04, step 3: Make-A-Video's optional video-text fine-tune (Singer et al. 2022, arXiv:2209.14792, Sec. 3.2)
- the temporal layers of the unlabelled-video model fine-tuned briefly on captioned clips, so that they hear
the direction words the image model never read (`FinetuneRecipe`; the bench measures it as a curve over the number
of captioned clips).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import replace

import torch

from minivid.data import time_reversed, video_text_pool
from minivid.models.pseudo3d import Pseudo3DConfig, add_text_cross_attn, temporal_parameters
from minivid.pipelines.ch04 import (
    Ch04Preset,
    checkpoint_path,
    get_preset,
    image_model,
    load_video_model,
    loss_fn_for,
    make_batch_fn,
    train_command,
)
from minivid.pipelines.common import load_or_train


def finetune(preset: str | Ch04Preset = "full", seed: int = 0, clips: int = 2000, progress: bool = True):
    """The unlabelled-video model fine-tuned on the first `clips` captioned clips (0: the model as it is).

    Returns (model, schedule, cond). Clips are played backwards with their caption's direction flipped. A model
    with the motion cue hears it as unknown (0) here: the curve measures what the captions alone teach.
    """
    p = get_preset(preset)
    r, f = p.video, p.finetune
    model, schedule, cond = load_video_model(p, seed, progress)
    if clips == 0:
        return model, schedule, cond
    pool = video_text_pool(r.size, r.frames, clips)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = {"x": pool["x"], "text": cond(pool["captions"]), "text_reversed": cond(time_reversed(pool)["captions"])}
    net = copy.deepcopy(model).train()
    if f.text_cross_attn:
        torch.manual_seed(seed)                                # the new layers' (non-zero) query/key init
        add_text_cross_attn(net, Pseudo3DConfig(**r.pseudo3d).head_dim)
    state = load_or_train(net, loss_fn_for(schedule, image_model(r, False).objective, cond.null_features(), f.p_uncond,
                                      r.noise_alpha, r.t_shift),
                          make_batch_fn(replace(r, motion_cue=False), data, f.batch_size, f.time_reversal), f,
                          checkpoint_path("finetune", p, seed, clips=clips), seed=seed, progress=progress,
                          params=temporal_parameters(net), desc=f"ch04 fine-tune on {clips} captioned clips",
                          command=train_command(p))
    return state.sampling_model.eval(), schedule, cond


__all__ = ["finetune"]
