//! The sampling job's plain-data floor (shared/design/layout.md floor 7; issue 9): everything the
//! streaming loop decides on the host, with CPU references for the GPU kernels that apply it.
//!
//! * [`scheduler`]: DDIM (v-prediction, η = 0) as released, with the `linear` override; per-step
//!   coefficients; the low-res noise augmentation (spec §2.3–2.5).
//! * [`noise`]: Philox4x32-10 Gaussian noise keyed by seed, frame, position, channel; the noise
//!   rescheduling permutations (spec §4.3).
//! * [`windows`]: mirror padding, 8/4 windows, ILT weights, streaming finality, `--frames`
//!   segments (spec §4.3, §4.5).
//! * [`tiles`]: latent padding to multiples of 8, tile plan, feathered blend weights, the
//!   `--tile`/`--tile-overlap` flags and the `--tile auto` choice (spec §4.3 "Spatial tiling").
//! * [`progress`]: the job's progress line on stderr (frames, window, step, frames/s, ETA).
//! * [`interrupt`]: stopping on Ctrl-C between frames, with whole frames written.
//! * [`source`]: the job's input frames, read ahead on a thread of their own so that a stop
//!   signal is answered while the input stalls.
//! * [`groups`]: `--windows-per-call`, several windows in one UNet call.
//!
//! No GPU in these. On top of them: [`options`] (what a job is given), [`graphs`] (the sampler step and
//! the decode chunk as recorded), [`tile_choice`] (the job's tiles: fixed, or what `--tile auto`
//! picks), [`engine`] (those graphs captured and run on the GPU), [`memory_plan`] (tiles and
//! windows per call sized to the GPU's memory), [`chunks`] (the ILT fuse of the
//! windows' final latents into the decoder's input, on the GPU), [`prepare`] (the job's setup
//! before its first frame, planned again for less where the GPU runs out of memory), [`job`]
//! (the streaming loop),
//! [`upscale`] (the command around it) and [`plan`] (`upscale --plan`).

pub mod noise;
pub mod scheduler;
pub mod tiles;
pub mod windows;
pub mod options;
pub mod graphs;
pub mod tile_choice;
pub mod engine;
pub mod memory_plan;
pub mod job;
pub mod prepare;
pub mod plan;
pub mod upscale;
pub mod out_file;
pub mod groups;
pub mod chunks;
pub mod interrupt;
pub mod progress;
pub mod source;
#[cfg(test)]
mod golden_window;
#[cfg(test)]
mod test_models;
