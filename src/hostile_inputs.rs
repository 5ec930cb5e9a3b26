//! Untrusted files through the readers that need a device (`forward --inputs`): what an audit
//! fed the binary, kept as regression tests. The device-free readers test themselves in their
//! own modules.

use std::path::{Path, PathBuf};

use crate::models::registry::{load_inputs, ModelKind};
use crate::testutil::{fresh_seed, test_gpu, Rng};
use crate::weights::save_f32;
use crate::DType;

fn tmp(name: &str) -> PathBuf {
    crate::testutil::scratch_dir("hostile").join(name)
}

fn err(kind: ModelKind, path: &Path) -> String {
    match load_inputs(&test_gpu(), kind, path, DType::F32) {
        Ok(_) => panic!("{} loaded, but should fail", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

/// `--inputs` takes safetensors only (a `.pt` may hold expanded views that are tiny on disk and
/// huge in memory), refuses a FIFO at once instead of blocking, and refuses absurd frame counts
/// before allocating for them.
#[test]
fn forward_inputs_are_bounded_safetensors_files() {
    let mut rng = Rng::new(fresh_seed());
    let pt = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/checkpoints/plain.pt");
    let e = err(ModelKind::VaeDecoder, &pt);
    assert!(e.contains("plain.pt") && e.contains("safetensors only"), "{e}");

    // Latents of 20 000 frames: refused by their declared shape (the check runs before the
    // 320 kB are even converted).
    let p = tmp("frames.safetensors");
    let (f, h, w) = (20_000, 1, 1);
    save_f32(&p, &[("latents", &[1, 4, f, h, w], &rng.normals(4 * f * h * w, 1.0))]).unwrap();
    let e = err(ModelKind::Te3dVaeDecoder, &p);
    assert!(e.contains("'latents'") && e.contains("20000 frames") && e.contains("frames.safetensors"), "{e}");
    // No frames at all: refused by the shape, not by a kernel deep in the decoder.
    save_f32(&p, &[("latents", &[1, 4, 0, 2, 2], &[])]).unwrap();
    let e = err(ModelKind::Te3dVaeDecoder, &p);
    assert!(e.contains("'latents' [1, 4, 0, 2, 2]") && e.contains("axis of size 0"), "{e}");
    // A window the model takes loads.
    save_f32(&p, &[("latents", &[1, 4, 4, 2, 2], &rng.normals(64, 1.0))]).unwrap();
    let inp = load_inputs(&test_gpu(), ModelKind::Te3dVaeDecoder, &p, DType::F32).unwrap();
    assert_eq!(inp.tensors[0].1.shape(), &[1, 4, 4, 2, 2]);

    #[cfg(unix)]
    {
        let fifo = tmp("inputs.fifo");
        let _ = std::fs::remove_file(&fifo);
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let t0 = std::time::Instant::now();
        let e = err(ModelKind::VaeDecoder, &fifo);
        assert!(e.contains("inputs.fifo") && e.contains("not a regular file"), "{e}");
        let e = match crate::weights::WeightStore::open(&fifo) {
            Ok(_) => panic!("a FIFO opened as weights"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains("not a regular file"), "{e}");
        assert!(t0.elapsed().as_secs() < 5, "refusing a FIFO took {:?}", t0.elapsed());
    }
}

/// A `class_labels` of the wrong length says so, instead of "cannot broadcast" from deep inside
/// the time embedding.
#[test]
fn wrong_class_labels_length_is_named() {
    let gpu = test_gpu();
    let c = crate::config::UNet2DConfig { block_out_channels: vec![32, 32, 32, 64], num_class_embeds: Some(10), ..Default::default() };
    let mut store = crate::weights::WeightStore::synthetic(fresh_seed());
    let mut l = crate::models::Loader::new(&gpu, &mut store, DType::F32);
    let te = crate::models::blocks::TimeEmbedding::load(&mut l, &c).unwrap();
    let mut rec = crate::Recorder::capture(&gpu);
    let t = crate::Tensor::from_f32(&gpu, &[981.0, 500.0], &[2], DType::F32).unwrap();
    let labels = crate::Tensor::from_u32(&gpu, &[20, 20, 20], &[3]).unwrap();
    let e = format!("{:#}", te.forward_silu(&mut rec, &t, Some(&labels), DType::F32).err().unwrap());
    assert!(e.contains("class_labels must be [2]") && e.contains("[3]"), "{e}");
    let labels = crate::Tensor::from_u32(&gpu, &[20, 7], &[2]).unwrap();
    assert_eq!(te.forward_silu(&mut rec, &t, Some(&labels), DType::F32).unwrap().shape(), &[2, 128]);
}

/// Class labels (the noise level) past the UNet's table are refused, not clamped on the GPU to
/// its last row (a forward conditioned on another level).
#[test]
fn class_labels_past_the_table_are_refused() {
    let gpu = test_gpu();
    let labels = crate::Tensor::from_u32(&gpu, &[3, 12], &[2]).unwrap();
    let inp = crate::models::registry::Inputs { tensors: vec![("class_labels".into(), labels)], ids: None, cfg_pair: false };
    let e = format!("{:#}", inp.check_class_labels(&gpu, Some(10)).unwrap_err());
    assert!(e.contains("holds 12") && e.contains("0 to 9 only"), "{e}");
    inp.check_class_labels(&gpu, Some(13)).unwrap();
    inp.check_class_labels(&gpu, None).unwrap();
}
