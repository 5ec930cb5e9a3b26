//! The small video models and job options the pipeline's tests share.

use crate::models::registry::{load_model, Model, ModelKind};
use crate::pipeline::groups::WindowsPerCall;
use crate::pipeline::options::{JobOptions, PromptEmbeds};
use crate::pipeline::tiles::TileOptions;
use crate::pipeline::windows::Ilt;
use crate::video::color::MatrixChoice;
use crate::testutil::Rng;
use crate::DType;

pub(crate) fn data(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
}

/// The tiny golden DiffVSR UNet and TE-3DVAE decoder.
pub(crate) fn tiny_models(gpu: &crate::Gpu, dt: DType) -> (Box<crate::models::video_unet::VideoUNet>, crate::models::video_vae::Te3dVaeDecoder) {
    let unet = match load_model(gpu, ModelKind::DiffvsrUnet, Some(&data("diffvsr_unet/config.json")), &data("diffvsr_unet/unet.pt"), dt).unwrap() {
        Model::VideoUnet(u) => u,
        _ => unreachable!(),
    };
    let vae = match load_model(gpu, ModelKind::Te3dVaeDecoder, Some(&data("te3dvae/config.json")), &data("te3dvae/weights.pt"), dt).unwrap() {
        Model::Te3dVaeDecoder(v) => v,
        _ => unreachable!(),
    };
    (unet, vae)
}

/// The micro models of [`crate::testutil::write_micro_configs`] with synthetic weights.
pub(crate) fn micro_models(gpu: &crate::Gpu, dt: DType) -> (Box<crate::models::video_unet::VideoUNet>, crate::models::video_vae::Te3dVaeDecoder) {
    use crate::weights::WeightStore;
    // A folder per call: tests building the micro models at once must not remove each
    // other's configs.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = crate::testutil::scratch_dir(&format!("micro-configs-{}", CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let (uc, vc) = crate::testutil::write_micro_configs(&dir).unwrap();
    let unet = match crate::models::registry::load_model_from(gpu, ModelKind::DiffvsrUnet, Some(&uc), &mut WeightStore::synthetic(11), dt).unwrap() {
        Model::VideoUnet(u) => u,
        _ => unreachable!(),
    };
    let vae = match crate::models::registry::load_model_from(gpu, ModelKind::Te3dVaeDecoder, Some(&vc), &mut WeightStore::synthetic(12), dt).unwrap() {
        Model::Te3dVaeDecoder(v) => v,
        _ => unreachable!(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    (unet, vae)
}

/// Job options for the tiny models: random prompt and negative-prompt embeddings of width
/// `d`, `steps` released DDIM steps, guidance 5, noise level 50, the released ILT.
pub(crate) fn test_options(d: usize, rng: &mut Rng, seed: u64, steps: usize) -> JobOptions {
    let mut embeds = || PromptEmbeds::new(rng.normals(77 * d, 1.0), vec![1, 77, d]).unwrap();
    let (positive, negative) = (embeds(), embeds());
    JobOptions { steps, guidance: 5.0, noise_level: 50, seed, ilt: Ilt::Released, positive, negative, matrix: MatrixChoice::Auto, frames: None, tiles: TileOptions::default(), windows_per_call: WindowsPerCall::Auto, input_frames: None, redecode_overflow: true }
}
