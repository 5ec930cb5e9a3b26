//! Host maths of the samplers, as the released DiffVSR pipeline configures diffusers' schedulers
//! (spec §2.3 tables, §2.4 noise augmentation, §2.5 the DDIM step, §4.3 defaults):
//!
//! * main: `DDIMScheduler` from `upscaler4x/scheduler/scheduler_config.json` (v-prediction,
//!   `steps_offset` 1, `set_alpha_to_one` false, `clip_sample` false, no `timestep_spacing` →
//!   `leading`) **with `beta_schedule` overridden to `linear`** (DV `inference_tile.py` L57);
//!   η = 0.
//! * low-res noise augmentation: `DDPMScheduler` from `low_res_scheduler/` (`scaled_linear`),
//!   only `add_noise`; `noise_level` default 50, at most 350; also the UNet's class label.
//!
//! Everything is f64 on the host; the GPU gets f32 coefficients per step. For v-prediction and
//! η = 0 the step is linear in (x_t, v):
//!
//! ```text
//! x̂0 = √ᾱ_t·x − √(1−ᾱ_t)·v,   ε̂ = √ᾱ_t·v + √(1−ᾱ_t)·x,   x_prev = √ᾱ_prev·x̂0 + √(1−ᾱ_prev)·ε̂
//!    = a·x + b·v,  a = √ᾱ_prev·√ᾱ_t + √(1−ᾱ_prev)·√(1−ᾱ_t),  b = √(1−ᾱ_prev)·√ᾱ_t − √ᾱ_prev·√(1−ᾱ_t)
//! ```
//!
//! with t_prev = t − T/N (integer division) and ᾱ_prev = ᾱ_0 when t_prev < 0 (the last step does
//! not return x̂0 exactly; spec §2.5). diffusers keeps its tables in float32; these f64 tables
//! agree with them to about 1e-6 relative (tests/data/scheduler, `tools/golden_scheduler.py`).

use serde::Deserialize;

/// `--noise-level` default (spec §4.3).
pub const DEFAULT_NOISE_LEVEL: u32 = 50;
/// Largest `--noise-level` (the pipeline's `max_noise_level`, spec §2.4).
pub const MAX_NOISE_LEVEL: u32 = 350;
/// `--steps` default (spec §4.3).
pub const DEFAULT_STEPS: usize = 50;
/// Most `--steps` the released schedule takes: its "leading" spacing with steps_offset 1 puts
/// the first of 1000 steps at t = 1000, past its 1000 training timesteps (diffusers fails there).
pub const MAX_STEPS: usize = 999;
/// `--guidance` default (spec §4.3).
pub const DEFAULT_GUIDANCE: f32 = 5.0;

fn d_1000() -> usize {
    1000
}
fn d_start() -> f64 {
    0.0001
}
fn d_end() -> f64 {
    0.02
}
fn d_linear() -> String {
    "linear".into()
}
fn d_epsilon() -> String {
    "epsilon".into()
}
fn d_leading() -> String {
    "leading".into()
}
fn d_true() -> bool {
    true
}
fn d_one() -> f64 {
    1.0
}

/// The fields of a diffusers `scheduler_config.json` this engine reads, with diffusers'
/// `DDIMScheduler`/`DDPMScheduler` defaults for absent ones. Other fields are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "d_1000")]
    pub num_train_timesteps: usize,
    #[serde(default = "d_start")]
    pub beta_start: f64,
    #[serde(default = "d_end")]
    pub beta_end: f64,
    #[serde(default = "d_linear")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "d_epsilon")]
    pub prediction_type: String,
    #[serde(default = "d_true")]
    pub clip_sample: bool,
    #[serde(default = "d_one")]
    pub clip_sample_range: f64,
    #[serde(default = "d_true")]
    pub set_alpha_to_one: bool,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default = "d_leading")]
    pub timestep_spacing: String,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

impl SchedulerConfig {
    /// Parses a `scheduler_config.json`.
    pub fn from_json(text: &str) -> Result<SchedulerConfig, String> {
        serde_json::from_str(text).map_err(|e| format!("scheduler_config.json: {e}"))
    }

    /// `upscaler4x/scheduler/scheduler_config.json` as read in spec §2.3 (before the override).
    pub fn released_main() -> SchedulerConfig {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: "scaled_linear".into(),
            trained_betas: None,
            prediction_type: "v_prediction".into(),
            clip_sample: false,
            clip_sample_range: 1.0,
            set_alpha_to_one: false,
            steps_offset: 1,
            thresholding: false,
            timestep_spacing: "leading".into(),
            rescale_betas_zero_snr: false,
        }
    }

    /// `upscaler4x/low_res_scheduler/scheduler_config.json` as read in spec §2.3.
    pub fn released_low_res() -> SchedulerConfig {
        SchedulerConfig {
            beta_schedule: "scaled_linear".into(),
            prediction_type: "epsilon".into(),
            clip_sample: true,
            set_alpha_to_one: true,
            steps_offset: 0,
            ..SchedulerConfig::released_main()
        }
    }

    /// The released pipeline's override of the main scheduler: `beta_schedule = "linear"`
    /// (DV `inference_tile.py` L57, inherited from LaVie).
    pub fn with_released_override(mut self) -> SchedulerConfig {
        self.beta_schedule = "linear".into();
        self
    }

    /// β_i, i = 0…T−1, in f64.
    pub fn betas(&self) -> Result<Vec<f64>, String> {
        let n = self.num_train_timesteps;
        if n < 2 {
            return Err(format!("num_train_timesteps {n}: need at least 2"));
        }
        if let Some(b) = &self.trained_betas {
            if b.len() != n {
                return Err(format!("trained_betas has {} values, num_train_timesteps is {n}", b.len()));
            }
            return Ok(b.clone());
        }
        let lin = |a: f64, b: f64| (0..n).map(move |i| a + (b - a) * i as f64 / (n - 1) as f64);
        match self.beta_schedule.as_str() {
            "linear" => Ok(lin(self.beta_start, self.beta_end).collect()),
            "scaled_linear" => Ok(lin(self.beta_start.sqrt(), self.beta_end.sqrt()).map(|s| s * s).collect()),
            s => Err(format!("beta_schedule {s:?} is not supported (linear, scaled_linear)")),
        }
    }

    /// ᾱ_t = Π_{i≤t} (1 − β_i), in f64.
    pub fn alphas_cumprod(&self) -> Result<Vec<f64>, String> {
        if self.rescale_betas_zero_snr {
            return Err("rescale_betas_zero_snr = true is not supported".into());
        }
        let mut p = 1.0;
        Ok(self
            .betas()?
            .into_iter()
            .map(|b| {
                p *= 1.0 - b;
                p
            })
            .collect())
    }
}

/// One DDIM step's values: the timestep fed to the UNet, ᾱ's, and the fused coefficients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimStep {
    /// The UNet's timestep input.
    pub t: usize,
    /// t − T/N; negative on the last step (then ᾱ_prev is the final ᾱ).
    pub t_prev: i64,
    pub alpha_bar: f64,
    pub alpha_bar_prev: f64,
    pub coeffs: DdimCoeffs,
}

/// x_prev = a·x_t + b·v (η = 0, v-prediction), in f64 (cast with [`DdimCoeffs::as_f32`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimCoeffs {
    pub a: f64,
    pub b: f64,
}

impl DdimCoeffs {
    /// From ᾱ_t and ᾱ_prev (see the module doc).
    pub fn new(alpha_bar: f64, alpha_bar_prev: f64) -> DdimCoeffs {
        let (st, rt) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
        let (sp, rp) = (alpha_bar_prev.sqrt(), (1.0 - alpha_bar_prev).sqrt());
        DdimCoeffs { a: sp * st + rp * rt, b: rp * st - sp * rt }
    }
    /// (a, b) as the GPU step kernel takes them.
    pub fn as_f32(&self) -> [f32; 2] {
        [self.a as f32, self.b as f32]
    }
}

/// The main DDIM sampler (η = 0, v-prediction).
#[derive(Clone, Debug)]
pub struct Ddim {
    pub config: SchedulerConfig,
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
}

impl Ddim {
    /// Checks that the config is one this engine samples exactly: v-prediction, no clipping or
    /// thresholding of x̂0 (the fused step cannot clamp), a known spacing.
    pub fn new(config: SchedulerConfig) -> Result<Ddim, String> {
        if config.prediction_type != "v_prediction" {
            return Err(format!(
                "scheduler prediction_type {:?}: the DiffVSR UNet predicts v; expected \"v_prediction\"",
                config.prediction_type
            ));
        }
        if config.clip_sample || config.thresholding {
            return Err("scheduler clip_sample/thresholding = true is not supported (the release has both false)".into());
        }
        if !matches!(config.timestep_spacing.as_str(), "leading" | "trailing" | "linspace") {
            return Err(format!("timestep_spacing {:?}: expected leading, trailing or linspace", config.timestep_spacing));
        }
        let alphas_cumprod = config.alphas_cumprod()?;
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        Ok(Ddim { config, alphas_cumprod, final_alpha_cumprod })
    }

    /// The released main scheduler: [`SchedulerConfig::released_main`] with the `linear` override.
    pub fn released() -> Ddim {
        Ddim::new(SchedulerConfig::released_main().with_released_override()).expect("the released config is supported")
    }

    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// ᾱ used after the last step (ᾱ_0 unless `set_alpha_to_one`).
    pub fn final_alpha_cumprod(&self) -> f64 {
        self.final_alpha_cumprod
    }

    /// diffusers' `set_timesteps(n)`: the timesteps in sampling order.
    pub fn timesteps(&self, n: usize) -> Result<Vec<i64>, String> {
        let tt = self.config.num_train_timesteps;
        if n == 0 || n > tt {
            return Err(format!("--steps {n}: must be 1 to {tt}"));
        }
        Ok(match self.config.timestep_spacing.as_str() {
            "leading" => {
                let r = tt / n;
                (0..n).rev().map(|i| (i * r + self.config.steps_offset) as i64).collect()
            }
            "trailing" => {
                // numpy: round(arange(T, 0, −T/n)) − 1.
                let step = -(tt as f64 / n as f64);
                let len = ((0.0 - tt as f64) / step).ceil() as usize;
                let delta = (tt as f64 + step) - tt as f64;
                (0..len).map(|i| (tt as f64 + i as f64 * delta).round_ties_even() as i64 - 1).collect()
            }
            _ => {
                // numpy: round(linspace(0, T−1, n))[::-1].
                let stop = (tt - 1) as f64;
                let step = if n > 1 { stop / (n - 1) as f64 } else { 0.0 };
                (0..n)
                    .rev()
                    .map(|i| if n > 1 && i == n - 1 { stop } else { i as f64 * step })
                    .map(|v| v.round_ties_even() as i64)
                    .collect()
            }
        })
    }

    /// Every step of an `n`-step run, with the coefficients the GPU step kernel needs.
    pub fn steps(&self, n: usize) -> Result<Vec<DdimStep>, String> {
        let tt = self.config.num_train_timesteps;
        let ratio = (tt / n.max(1)) as i64;
        self.timesteps(n)?
            .into_iter()
            .map(|t| {
                if t < 0 || t as usize >= tt {
                    return Err(format!(
                        "--steps {n} gives timestep {t}, outside 0..{tt} (with steps_offset {}); use fewer steps",
                        self.config.steps_offset
                    ));
                }
                let t_prev = t - ratio;
                let alpha_bar = self.alphas_cumprod[t as usize];
                let alpha_bar_prev = if t_prev >= 0 { self.alphas_cumprod[t_prev as usize] } else { self.final_alpha_cumprod };
                Ok(DdimStep { t: t as usize, t_prev, alpha_bar, alpha_bar_prev, coeffs: DdimCoeffs::new(alpha_bar, alpha_bar_prev) })
            })
            .collect()
    }
}

/// The step in diffusers' order (x̂0, ε̂, then the combination), in f64: the unfused reference.
pub fn ddim_step_unfused(x: &[f32], v: &[f32], alpha_bar: f64, alpha_bar_prev: f64) -> Vec<f32> {
    let (st, rt) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
    let (sp, rp) = (alpha_bar_prev.sqrt(), (1.0 - alpha_bar_prev).sqrt());
    x.iter()
        .zip(v)
        .map(|(&x, &v)| {
            let (x, v) = (x as f64, v as f64);
            let x0 = st * x - rt * v;
            let eps = st * v + rt * x;
            (sp * x0 + rp * eps) as f32
        })
        .collect()
}

/// The low-res noise augmentation: x̃ = √ᾱ_n·x + √(1−ᾱ_n)·ε with the low-res schedule.
#[derive(Clone, Debug)]
pub struct LowResNoise {
    alphas_cumprod: Vec<f64>,
}

impl LowResNoise {
    pub fn new(config: &SchedulerConfig) -> Result<LowResNoise, String> {
        Ok(LowResNoise { alphas_cumprod: config.alphas_cumprod()? })
    }

    /// From [`SchedulerConfig::released_low_res`].
    pub fn released() -> LowResNoise {
        LowResNoise::new(&SchedulerConfig::released_low_res()).expect("the released low-res config is supported")
    }

    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// (√ᾱ_n, √(1−ᾱ_n)) for `--noise-level n` (0 to [`MAX_NOISE_LEVEL`]).
    pub fn coeffs(&self, level: u32) -> Result<[f64; 2], String> {
        if level > MAX_NOISE_LEVEL {
            return Err(format!("--noise-level {level}: at most {MAX_NOISE_LEVEL} (the pipeline's max_noise_level)"));
        }
        let a = *self.alphas_cumprod.get(level as usize).ok_or_else(|| format!("--noise-level {level}: past the schedule"))?;
        Ok([a.sqrt(), (1.0 - a).sqrt()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::sampler::cpu::{add_noise, cfg_combine, ddim_step};
    use crate::testutil::{fresh_seed, Rng};
    use serde_json::Value;

    fn golden() -> Value {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/scheduler/golden.json"));
        serde_json::from_str(text).unwrap()
    }

    fn vec64(v: &Value) -> Vec<f64> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    }
    fn vec32(v: &Value) -> Vec<f32> {
        vec64(v).into_iter().map(|x| x as f32).collect()
    }

    fn max_rel(got: &[f64], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len());
        got.iter().zip(want).map(|(g, w)| ((g - w) / w).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn released_configs_parse_from_json() {
        let g = golden();
        let main = SchedulerConfig::from_json(&g["main_config"].to_string()).unwrap();
        assert_eq!(main, SchedulerConfig::released_main());
        let low = SchedulerConfig::from_json(&g["low_res_config"].to_string()).unwrap();
        assert_eq!(low.beta_schedule, "scaled_linear");
        assert_eq!(low.alphas_cumprod().unwrap(), SchedulerConfig::released_low_res().alphas_cumprod().unwrap());
        assert!(SchedulerConfig::from_json("{\"num_train_timesteps\": \"x\"}").unwrap_err().contains("scheduler_config.json"));
        // diffusers' defaults would clip x̂0 and predict ε: refused, not silently run.
        assert!(Ddim::new(SchedulerConfig::from_json("{}").unwrap()).unwrap_err().contains("prediction_type"));
        let mut c = SchedulerConfig::released_main();
        c.clip_sample = true;
        assert!(Ddim::new(c).unwrap_err().contains("clip_sample"));
        let mut c = SchedulerConfig::released_main();
        c.beta_schedule = "squaredcos_cap_v2".into();
        assert!(Ddim::new(c).unwrap_err().contains("squaredcos_cap_v2"));
    }

    #[test]
    fn alphas_cumprod_match_diffusers() {
        let g = golden();
        let lin = Ddim::released();
        let scaled = Ddim::new(SchedulerConfig::released_main()).unwrap();
        // Against torch float64 on the same formulas: f64 rounding only.
        assert!(max_rel(lin.alphas_cumprod(), &vec64(&g["alphas_cumprod_linear_f64"])) < 1e-12);
        assert!(max_rel(scaled.alphas_cumprod(), &vec64(&g["alphas_cumprod_scaled_linear_f64"])) < 1e-12);
        // Against diffusers' own float32 tables: float32 linspace/cumprod rounding, measured
        // at 3.6e-7 (linear) and 7.5e-7 (scaled_linear) relative.
        assert!(max_rel(lin.alphas_cumprod(), &vec64(&g["alphas_cumprod_linear_f32"])) < 1.5e-6);
        assert!(max_rel(scaled.alphas_cumprod(), &vec64(&g["alphas_cumprod_scaled_linear_f32"])) < 1.5e-6);
        assert!(max_rel(LowResNoise::released().alphas_cumprod(), &vec64(&g["low_res_alphas_cumprod_f32"])) < 1.5e-6);
        assert!(((lin.final_alpha_cumprod() - g["final_alpha_cumprod_f32"].as_f64().unwrap()) / lin.final_alpha_cumprod()).abs() < 1e-7);
        // The override matters: at t = 500 the two schedules differ by 4× (spec §2.3 table).
        assert!((lin.alphas_cumprod()[500] - 0.0778).abs() < 1e-4);
        assert!((scaled.alphas_cumprod()[500] - 0.3313).abs() < 1e-4);
    }

    #[test]
    fn timesteps_match_diffusers_for_every_spacing() {
        let g = golden();
        let mut checked = 0;
        for (spacing, by_n) in g["timesteps"].as_object().unwrap() {
            let mut cfg = SchedulerConfig::released_main().with_released_override();
            cfg.timestep_spacing = spacing.clone();
            let d = Ddim::new(cfg).unwrap();
            for (n, want) in by_n.as_object().unwrap() {
                let want: Vec<i64> = want.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
                assert_eq!(d.timesteps(n.parse().unwrap()).unwrap(), want, "{spacing} n={n}");
                checked += 1;
            }
        }
        assert_eq!(checked, 27);
        let d = Ddim::released();
        assert!(d.timesteps(0).unwrap_err().contains("--steps 0"));
        assert!(d.timesteps(1001).is_err());
        // leading + steps_offset 1 at 1000 steps reaches t = 1000: refused with advice.
        assert!(d.steps(MAX_STEPS + 1).unwrap_err().contains("use fewer steps"));
        assert_eq!(d.steps(MAX_STEPS).unwrap().len(), MAX_STEPS);
    }

    #[test]
    fn steps_match_diffusers_ddim_step() {
        let g = golden();
        let d = Ddim::released();
        let table32 = vec64(&g["alphas_cumprod_linear_f32"]);
        let final32 = g["final_alpha_cumprod_f32"].as_f64().unwrap();
        for case in g["steps"].as_array().unwrap() {
            let n = case["n"].as_u64().unwrap() as usize;
            let i = case["index"].as_u64().unwrap() as usize;
            let step = d.steps(n).unwrap()[i];
            assert_eq!(step.t as u64, case["t"].as_u64().unwrap());
            let (x, v, want) = (vec32(&case["x"]), vec32(&case["v"]), vec32(&case["prev"]));
            // 1. The formulas, fed diffusers' own float32 ᾱ: only float32 arithmetic on O(1)
            //    terms separates them, so 2e-6 absolute.
            let (a32, p32) = (table32[step.t], if step.t_prev >= 0 { table32[step.t_prev as usize] } else { final32 });
            let c32 = DdimCoeffs::new(a32, p32);
            let [a, b] = c32.as_f32();
            for (what, got) in [("fused", ddim_step(&x, &v, a, b)), ("unfused", ddim_step_unfused(&x, &v, a32, p32))] {
                let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(err < 2e-6, "{what} n={n} step {i} (t={}): max abs error {err:e}", step.t);
            }
            // 2. With the engine's f64 ᾱ: additionally off by the coefficient differences that
            //    the float32 tables cause, which are bounded here rather than assumed.
            let (da, db) = ((step.coeffs.a - c32.a).abs() as f32, (step.coeffs.b - c32.b).abs() as f32);
            assert!(da < 1e-5 && db < 1e-5, "t={}: coefficient drift {da:e} {db:e}", step.t);
            let [a, b] = step.coeffs.as_f32();
            let got = ddim_step(&x, &v, a, b);
            for k in 0..got.len() {
                let tol = 2e-6 + da * x[k].abs() + db * v[k].abs();
                assert!((got[k] - want[k]).abs() <= tol, "n={n} step {i}: {} vs {}", got[k], want[k]);
            }
        }
    }

    #[test]
    fn last_step_uses_the_final_alpha_not_x0() {
        let d = Ddim::released();
        let last = *d.steps(DEFAULT_STEPS).unwrap().last().unwrap();
        assert_eq!((last.t, last.t_prev), (1, -19));
        assert_eq!(last.alpha_bar_prev, d.alphas_cumprod()[0]);
        // x_prev = 0.99995·x̂0 + 0.0100·ε̂ (spec §2.5): with x̂0 = √ᾱ x − √(1−ᾱ) v etc.
        let (st, rt) = (last.alpha_bar.sqrt(), (1.0 - last.alpha_bar).sqrt());
        let want_a = 0.99995 * st + 0.0100 * rt;
        assert!((last.coeffs.a - want_a).abs() < 1e-4, "{:?}", last.coeffs);
        let steps = d.steps(DEFAULT_STEPS).unwrap();
        assert_eq!(steps[0].t, 981);
        assert_eq!(steps[0].t_prev, 961);
    }

    #[test]
    fn fused_step_equals_unfused_on_random_inputs() {
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let d = Ddim::released();
        for n in [1, 7, 13, 33] {
            for s in d.steps(n).unwrap() {
                let len = [1, 7, 13, 33][rng.below(4) as usize];
                let x = rng.normals(len, 1.0);
                let v = rng.normals(len, 1.0);
                let [ca, cb] = s.coeffs.as_f32();
                let a = ddim_step(&x, &v, ca, cb);
                let b = ddim_step_unfused(&x, &v, s.alpha_bar, s.alpha_bar_prev);
                for (p, q) in a.iter().zip(&b) {
                    assert!((p - q).abs() < 2e-6 * (1.0 + q.abs()), "seed {seed} n={n} t={}: {p} vs {q}", s.t);
                }
            }
        }
    }

    #[test]
    fn cfg_combine_matches_the_pipeline() {
        let g = golden();
        let c = &g["cfg"];
        let v_pair = [vec32(&c["uncond"]), vec32(&c["cond"])].concat();
        let got = cfg_combine(&v_pair, c["guidance"].as_f64().unwrap() as f32);
        for (a, b) in got.iter().zip(vec32(&c["out"])) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn noise_augmentation_matches_ddpm_add_noise() {
        let g = golden();
        let low = LowResNoise::released();
        let table32 = vec64(&g["low_res_alphas_cumprod_f32"]);
        for case in g["add_noise"].as_array().unwrap() {
            let level = case["level"].as_u64().unwrap() as u32;
            let (x, n, want) = (vec32(&case["x"]), vec32(&case["noise"]), vec32(&case["out"]));
            // With diffusers' float32 ᾱ_n: float32 arithmetic only.
            let a32 = table32[level as usize];
            let got = add_noise(&x, &n, a32.sqrt() as f32, (1.0 - a32).sqrt() as f32);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 2e-6, "level {level}: {a} vs {b}");
            }
            // With the f64 table: plus the coefficient drift of the float32 table (largest at
            // level 0, where √(1−ᾱ) = 0.01 amplifies ᾱ's float32 rounding).
            let c = low.coeffs(level).unwrap();
            let (da, db) = ((c[0] - a32.sqrt()).abs() as f32, (c[1] - (1.0 - a32).sqrt()).abs() as f32);
            assert!(da < 1e-6 && db < 2e-6, "level {level}: coefficient drift {da:e} {db:e}");
            let got = add_noise(&x, &n, c[0] as f32, c[1] as f32);
            for k in 0..got.len() {
                assert!((got[k] - want[k]).abs() <= 2e-6 + da * x[k].abs() + db * n[k].abs(), "level {level}");
            }
        }
        // Spec §2.4: n = 50 → (0.9954, 0.0957).
        let [a, b] = low.coeffs(DEFAULT_NOISE_LEVEL).unwrap();
        assert!((a - 0.9954).abs() < 1e-4 && (b - 0.0957).abs() < 1e-4);
        assert!(low.coeffs(351).unwrap_err().contains("at most 350"));
        assert!(low.coeffs(MAX_NOISE_LEVEL).is_ok());
    }
}
