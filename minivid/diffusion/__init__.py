"""Gaussian diffusion as pure functions: schedules, the forward process, objectives, samplers.

    from minivid.diffusion import make_schedule, q_sample, diffusion_loss, ddim_sample
    s = make_schedule("cosine", 1000)
    loss = diffusion_loss(model, x0, s, objective="v", generator=g)
    x = ddim_sample(model, (16, 3, 16, 16), s, "v", steps=50, clip=1.0, generator=g)

Papers: DDPM (arXiv:2006.11239), improved DDPM (arXiv:2102.09672), DDIM (arXiv:2010.02502),
v-prediction (arXiv:2202.00512), zero terminal SNR (arXiv:2305.08891), CFG (arXiv:2207.12598).
"""
from minivid.diffusion.flow import (
    FLOW_METHODS,
    T_SAMPLERS,
    flow_interpolate,
    flow_matching_loss,
    flow_sample,
    flow_timesteps,
    sample_flow_t,
    x0_eps_from_velocity,
)
from minivid.diffusion.process import (
    OBJECTIVES,
    diffusion_loss,
    mixed_noise,
    model_output_to_x0_eps,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior,
    q_sample,
    q_step,
    sample_timesteps,
    shifted_timesteps,
    snr,
    training_target,
    v_from_x0_eps,
    x0_eps_from_v,
)
from minivid.diffusion.samplers import (
    SPACINGS,
    alpha_bar_at,
    cfg_combine,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    guided_predict,
    sample,
)
from minivid.diffusion.schedules import (
    SCHEDULE_KINDS,
    Schedule,
    cosine_betas,
    gather,
    linear_betas,
    make_schedule,
    rescale_zero_terminal_snr,
    schedule_from_betas,
    shift_snr,
)

__all__ = [
    "OBJECTIVES", "SPACINGS", "SCHEDULE_KINDS", "Schedule", "make_schedule", "schedule_from_betas",
    "linear_betas", "cosine_betas", "rescale_zero_terminal_snr", "shift_snr", "gather", "q_sample", "q_step",
    "q_posterior", "snr", "predict_x0_from_eps", "predict_eps_from_x0", "v_from_x0_eps", "x0_eps_from_v",
    "model_output_to_x0_eps", "training_target", "sample_timesteps", "shifted_timesteps", "diffusion_loss",
    "mixed_noise", "ddim_timesteps",
    "ddpm_step", "ddim_step", "alpha_bar_at", "cfg_combine", "guided_predict", "ddim_sample",
    "ddpm_sample", "sample", "FLOW_METHODS", "T_SAMPLERS", "flow_interpolate", "flow_matching_loss", "flow_sample",
    "flow_timesteps", "sample_flow_t", "x0_eps_from_velocity",
]
