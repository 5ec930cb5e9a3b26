//! End to end through the binary: `diffvsr-wgpu upscale` on small synthetic y4m streams, with
//! micro models laid out as a release folder (config overrides beside the checkpoints; see
//! [`micro_release`]), 1 step (the sampler's step-to-step replay is for the unit tests of
//! `pipeline::job` and `pipeline::engine` to check). Checks the output header, the exact frame count, the 4× size, and
//! determinism (same seed → same bytes, another seed → other bytes); and that a truncated input
//! stops with a message naming the frame. Also: `--frames` segments joined equal the whole run;
//! the binary without a command is the filter; the filter between two ffmpeg processes (skipped
//! with a note where ffmpeg is missing; `.ci/run` installs it); the `--gif` preview and the
//! progress lines; Ctrl-C and SIGTERM on a slow stream (whole frames, exit code 130); 4:2:2, 4:4:4 12-bit and
//! mono streams keeping their format.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
}

fn tmp(name: &str) -> PathBuf {
    let d = diffvsr_wgpu::testutil::scratch_dir(&format!("filter-{name}"));
    // Empty, should a test run twice in one process.
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A release folder of the tiny models: DiffVSR_UNet.pt + unet_3d_config.json, TE-3DVAE.pt +
/// vae_config.json, upscaler4x/{text_encoder, tokenizer}.
fn release(dir: &Path) -> PathBuf {
    let r = dir.join("release");
    std::fs::create_dir_all(r.join("upscaler4x/text_encoder")).unwrap();
    std::fs::create_dir_all(r.join("upscaler4x/tokenizer")).unwrap();
    let cp = |from: PathBuf, to: &str| {
        std::fs::copy(&from, r.join(to)).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    };
    cp(data("diffvsr_unet/unet.pt"), "DiffVSR_UNet.pt");
    cp(data("diffvsr_unet/config.json"), "unet_3d_config.json");
    cp(data("te3dvae/weights.pt"), "TE-3DVAE.pt");
    cp(data("te3dvae/config.json"), "vae_config.json");
    cp(data("clip_text/model.safetensors"), "upscaler4x/text_encoder/model.safetensors");
    cp(data("clip_text/config.json"), "upscaler4x/text_encoder/config.json");
    for f in ["merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"] {
        cp(data(&format!("clip_tokenizer/{f}")), &format!("upscaler4x/tokenizer/{f}"));
    }
    r
}

/// A release folder of micro models, written once per test run under `target/tmp`: the micro
/// configs ([`diffvsr_wgpu::testutil::write_micro_configs`]: a 2-level UNet [32, 64] and a
/// TE-3DVAE, one layer per block) with seeded synthetic weights as `DiffVSR_UNet.safetensors` /
/// `TE-3DVAE.safetensors`. About 3× less work per window on the software driver than the golden
/// models; the tests that need no golden weights run on it.
/// (`one_frame_in_gives_one_frame_out_with_the_text_encoder` keeps the `.pt` release, with its
/// text encoder.)
fn micro_release() -> &'static Path {
    use diffvsr_wgpu::models::registry::{load_model_from, ModelKind};
    use diffvsr_wgpu::weights::{save_f32, WeightStore};
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let r = diffvsr_wgpu::testutil::scratch_dir("filter-micro-release");
        diffvsr_wgpu::testutil::write_micro_configs(&r).unwrap();
        let gpu = diffvsr_wgpu::testutil::test_gpu();
        for (kind, config, file, seed) in [
            (ModelKind::DiffvsrUnet, "unet_3d_config.json", "DiffVSR_UNet.safetensors", 11),
            (ModelKind::Te3dVaeDecoder, "vae_config.json", "TE-3DVAE.safetensors", 12),
        ] {
            // The model asks a synthetic store for every tensor it takes; the same seed gives
            // the same values again for the file.
            let mut asked = WeightStore::synthetic(seed);
            load_model_from(&gpu, kind, Some(&r.join(config)), &mut asked, diffvsr_wgpu::DType::F32).unwrap();
            let mut values = WeightStore::synthetic(seed);
            let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = asked.requested().iter().map(|(n, s)| (n.clone(), s.clone(), values.take(n, s).unwrap())).collect();
            let views: Vec<(&str, &[usize], &[f32])> = tensors.iter().map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice())).collect();
            save_f32(&r.join(file), &views).unwrap();
        }
        r
    })
}

/// `prompt_embeds [1, 77, 32]` (the tiny UNet's cross-attention width), deterministic values.
fn embeds(path: &Path, salt: u32) {
    use safetensors::tensor::{Dtype, TensorView};
    let v: Vec<f32> = (0..77 * 32).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(salt) >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 2.0).collect();
    let view = TensorView::new(Dtype::F32, vec![1, 77, 32], bytemuck::cast_slice(&v)).unwrap();
    safetensors::serialize_to_file([("prompt_embeds", view)], None, path).unwrap();
}

/// The prompt and negative prompt embeddings (`pos`, `neg`), written into `dir`.
fn embeds_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let (pos, neg) = (dir.join("pos.safetensors"), dir.join("neg.safetensors"));
    embeds(&pos, 1);
    embeds(&neg, 2);
    (pos, neg)
}

/// A 4:2:0 8-bit stream of `n` frames `w`×`h` with a moving pattern.
fn stream(w: usize, h: usize, n: usize) -> Vec<u8> {
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut s = format!("YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg XCOLORRANGE=LIMITED\n").into_bytes();
    for f in 0..n {
        s.extend_from_slice(b"FRAME\n");
        s.extend((0..w * h).map(|i| (16 + (i % w * 17 + i / w * 29 + f * 13) % 220) as u8));
        s.extend((0..cw * ch).map(|i| (64 + (i * 11 + f * 5) % 128) as u8));
        s.extend((0..cw * ch).map(|i| (96 + (i * 7 + f * 3) % 96) as u8));
    }
    s
}

fn upscale(release: &Path, input: &Path, output: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu"))
        .arg("upscale")
        .arg("--weights")
        .arg(release)
        .arg("-i")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--steps", "1", "--quiet"])
        .args(extra)
        .output()
        .unwrap()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "upscale failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// Splits a y4m file into its header line and its frames (each FRAME line + payload), given
/// the frame payload size.
fn frames(bytes: &[u8], payload: usize) -> (String, Vec<Vec<u8>>) {
    let nl = bytes.iter().position(|&b| b == b'\n').expect("a header line");
    let header = String::from_utf8(bytes[..nl].to_vec()).unwrap();
    let mut rest = &bytes[nl + 1..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        assert!(rest.starts_with(b"FRAME\n"), "frame {} does not start with FRAME", out.len());
        assert!(rest.len() >= 6 + payload, "frame {} is truncated", out.len());
        out.push(rest[6..6 + payload].to_vec());
        rest = &rest[6 + payload..];
    }
    (header, out)
}

#[test]
fn upscale_is_4x_frame_exact_and_deterministic() {
    let dir = tmp("det");
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    // 7 frames of 7×5: odd, not multiples of 8 (the latent pads to 8×8, the output crops back).
    let (w, h, n) = (7, 5, 7);
    let input = dir.join("in.y4m");
    std::fs::write(&input, stream(w, h, n)).unwrap();
    let pe = ["--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()];
    let run = |name: &str, seed: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args = pe.to_vec();
        args.extend(["--seed", seed]);
        args.extend(extra);
        ok(&upscale(&rel, &input, &out, &args));
        std::fs::read(out).unwrap()
    };
    let a = run("a.y4m", "1", &[]);
    // Also: `--tile 8` is one tile of the 8×8 latent, which must be the untiled job byte for byte.
    let a2 = run("a2.y4m", "1", &["--tile", "8"]);
    let b = run("b.y4m", "2", &[]);

    let (ow, oh) = (4 * w, 4 * h);
    let payload = ow * oh + 2 * (ow.div_ceil(2) * oh.div_ceil(2));
    let (header, fa) = frames(&a, payload);
    assert_eq!(header, format!("YUV4MPEG2 W{ow} H{oh} F25:1 Ip A1:1 C420jpeg XCOLORRANGE=LIMITED"));
    assert_eq!(fa.len(), n, "one output frame per input frame");
    assert_eq!(a, a2, "the same seed (and one tile by --tile 8 or by auto) must give the same bytes");
    assert_eq!(a.len(), b.len());
    assert_ne!(a, b, "another seed must give other bytes");
    // Not a constant image: the model's output varies over the frame.
    let luma = &fa[0][..ow * oh];
    assert!(luma.iter().any(|&v| v != luma[0]), "output luma is constant");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--random-weights`: the job runs from a folder holding only config overrides (no
/// checkpoint, no text encoder: synthetic weights and random prompt embeddings), as the GPU
/// benchmark times it at full size; with `--tune on` too, to the same bytes, timing its shapes
/// once and reading them from the tuning cache after.
#[test]
fn random_weights_run_the_job_without_a_release() {
    let dir = tmp("random");
    let configs = dir.join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    diffvsr_wgpu::testutil::write_micro_configs(&configs).unwrap();
    let input = dir.join("in.y4m");
    std::fs::write(&input, stream(7, 5, 1)).unwrap();
    let out = dir.join("out.y4m");
    ok(&upscale(&configs, &input, &out, &["--random-weights", "3"]));
    let (header, f) = frames(&std::fs::read(&out).unwrap(), 28 * 20 + 2 * (14 * 10));
    assert!(header.starts_with("YUV4MPEG2 W28 H20 "), "{header}");
    assert_eq!(f.len(), 1);
    // Tuned kernel tiles (the default on a GPU) change no byte of the job (UNet, VAE, sampler),
    // timed or read from the tuning cache the first run left.
    let cache = dir.join("tuning");
    for run in ["timed", "cached"] {
        let tuned = dir.join(format!("{run}.y4m"));
        let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu"))
            .env("DIFFVSR_TUNE_CACHE", &cache)
            .args(["upscale", "--steps", "1", "--random-weights", "3", "--tune", "on", "--weights"])
            .arg(&configs)
            .arg("-i")
            .arg(&input)
            .arg("-o")
            .arg(&tuned)
            .output()
            .unwrap();
        ok(&o);
        assert!(std::fs::read(&tuned).unwrap() == std::fs::read(&out).unwrap(), "--tune on ({run}) changed the output");
        let err = String::from_utf8_lossy(&o.stderr);
        let line = err.lines().find(|l| l.contains("kernel tiles tuned for")).unwrap_or_else(|| panic!("no tuning summary in {err}"));
        assert_eq!(line.contains(", 0 of them read from the tuning cache"), run == "timed", "{run}: {line}");
    }
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(files.len() == 1 && files[0].to_string_lossy().ends_with(".json"), "one cache file per adapter: {files:?}");
    // Without it, the same folder is not a release: everything missing is named at once.
    let o = upscale(&configs, &input, &dir.join("none.y4m"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no DiffVSR_UNet.pt, no TE-3DVAE.pt, no upscaler4x/text_encoder") && err.contains("fetch-weights"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_frame_in_gives_one_frame_out_with_the_text_encoder() {
    let dir = tmp("one");
    let rel = release(&dir);
    let input = dir.join("in.y4m");
    // 9×6: wider than 8, so the latent is 16×8.
    std::fs::write(&input, stream(9, 6, 1)).unwrap();
    let out = dir.join("out.y4m");
    ok(&upscale(&rel, &input, &out, &["--prompt", "a test", "--seed", "3"]));
    let bytes = std::fs::read(&out).unwrap();
    let payload = 36 * 24 + 2 * (18 * 12);
    let (header, f) = frames(&bytes, payload);
    assert!(header.starts_with("YUV4MPEG2 W36 H24 "), "{header}");
    assert_eq!(f.len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_stream_names_the_frame_and_fails() {
    let dir = tmp("trunc");
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    let input = dir.join("in.y4m");
    let (out, gif) = (dir.join("out.y4m"), dir.join("preview.gif"));
    let run = |cut_from: &[u8]| {
        std::fs::write(&input, cut_from).unwrap();
        upscale(&rel, &input, &out, &["--gif", gif.to_str().unwrap(), "--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()])
    };
    // Cut inside frame 0: nothing to write. The file the run created is gone, the one that was
    // there is as it was (no header-only stubs).
    std::fs::write(&gif, b"an earlier preview").unwrap();
    let mut s = stream(7, 5, 1);
    s.truncate(s.len() - 10);
    let o = run(&s);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("inside frame 0, before any whole frame: no frame was written") && !err.contains("panicked"), "{err}");
    assert!(!out.exists(), "a header-only output was left");
    assert_eq!(std::fs::read(&gif).unwrap(), b"an earlier preview", "the existing --gif file was touched");
    // Cut inside frame 2 (its data, then its FRAME line): the clip ends at its two whole frames,
    // as ffmpeg reads such a stream; both are upscaled and written, and the run still fails,
    // naming the cut (with no `--frames` to go on with: there is no rest).
    let payload = 28 * 20 + 2 * (14 * 10);
    for cut in [10, stream(7, 5, 3).len() - stream(7, 5, 2).len() - 3] {
        let mut s = stream(7, 5, 3);
        s.truncate(s.len() - cut);
        let o = run(&s);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "a truncated stream must fail");
        assert!(err.contains("frame 2") && err.contains("its 2 whole frames: output frames 0..2 were upscaled and written") && !err.contains("--frames"), "{err}");
        let (_, want) = frames(&std::fs::read(&out).unwrap(), payload);
        assert_eq!(want.len(), 2, "cut {cut}");
        // The same frames as a run of the two whole frames alone.
        std::fs::write(&input, stream(7, 5, 2)).unwrap();
        let whole = dir.join("whole.y4m");
        ok(&upscale(&rel, &input, &whole, &["--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()]));
        assert!(std::fs::read(&whole).unwrap() == std::fs::read(&out).unwrap(), "cut {cut}: not the run of the whole frames");
    }
    // A segment says what of it was written: from START to the whole frames' end, or nothing
    // where START is past them.
    let mut s = stream(7, 5, 3);
    s.truncate(s.len() - 10);
    std::fs::write(&input, &s).unwrap();
    for (frames, says) in [("1:", "output frames 1..2 were upscaled and written"), ("3:", "its 2 whole frames end before --frames 3: no frame was written")] {
        let o = upscale(&rel, &input, &out, &["--frames", frames, "--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "--frames {frames}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ten_bit_stays_ten_bit() {
    let dir = tmp("p10");
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    // 3 frames of 5×3, 4:2:0 10-bit (little-endian 16-bit samples).
    let (w, h, n) = (5usize, 3usize, 3usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut s = format!("YUV4MPEG2 W{w} H{h} F30000:1001 Ip A1:1 C420p10 XYSCSS=420P10\n").into_bytes();
    for f in 0..n {
        s.extend_from_slice(b"FRAME\n");
        for i in 0..w * h + 2 * cw * ch {
            let v: u16 = if i < w * h { 64 + ((i * 97 + f * 31) % 876) as u16 } else { 64 + ((i * 53 + f * 11) % 896) as u16 };
            s.extend_from_slice(&v.to_le_bytes());
        }
    }
    let input = dir.join("in.y4m");
    std::fs::write(&input, s).unwrap();
    let out = dir.join("out.y4m");
    ok(&upscale(&rel, &input, &out, &["--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()]));
    let bytes = std::fs::read(&out).unwrap();
    let (ow, oh) = (4 * w, 4 * h);
    let payload = 2 * (ow * oh + 2 * ow.div_ceil(2) * oh.div_ceil(2));
    let (header, f) = frames(&bytes, payload);
    assert_eq!(header, format!("YUV4MPEG2 W{ow} H{oh} F30000:1001 Ip A1:1 C420p10 XYSCSS=420P10"));
    assert_eq!(f.len(), n);
    for (k, fr) in f.iter().enumerate() {
        let max = fr.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).max().unwrap();
        assert!(max < 1024, "frame {k}: sample {max} does not fit in 10 bits");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A full disk mid-run, made by a file size limit (`ulimit -f`, SIGXFSZ ignored, so the write
/// fails with EFBIG as it would with ENOSPC): the first output frame fits, the second is cut
/// off part way. The file is cut back to the whole frame, which is the whole run's first frame,
/// and the error says which frames are kept and where `--frames` goes on. (bash's `ulimit -f`
/// counts 1024-byte blocks outside its POSIX mode.)
#[cfg(unix)]
#[test]
fn a_full_disk_keeps_the_whole_frames_and_says_where_to_go_on() {
    let dir = tmp("full");
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    let input = dir.join("in.y4m");
    std::fs::write(&input, stream(7, 5, 2)).unwrap();
    let embeds = ["--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()];
    let whole = dir.join("whole.y4m");
    ok(&upscale(&rel, &input, &whole, &embeds));
    let payload = 28 * 20 + 2 * 14 * 10;
    let (_, all) = frames(&std::fs::read(&whole).unwrap(), payload);
    // The header and one frame are under the 1024 bytes `ulimit -f 1` allows; two are not.
    let out = dir.join("out.y4m");
    let o = Command::new("bash")
        .args(["-c", "set +o posix; trap '' XFSZ; ulimit -f 1; exec \"$@\"", "bash", env!("CARGO_BIN_EXE_diffvsr-wgpu"), "upscale", "--weights"])
        .arg(&rel)
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .args(["--steps", "1", "--quiet"])
        .args(embeds)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    let kept = format!("1 whole output frame written (frames 0..1, kept in {}, which the parts join to); once the cause is mended, --frames 1: runs the rest", out.display());
    assert!(err.contains("writing output frame 1") && err.contains(&kept), "{err}");
    let (_, got) = frames(&std::fs::read(&out).unwrap(), payload);
    assert_eq!(got, all[..1], "the frame kept is not the whole run's first");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--output-depth` and `--output-chroma`: a 4:2:0 8-bit input written as 4:2:0 10-bit and as
/// 4:4:4 16-bit. The deeper samples are the default run's picture at finer steps: every 10-bit
/// sample within 0.625 of four times the 8-bit one (half a step of each), and the 16-bit luma
/// within 0.502 of 256 times it (the luma does not depend on the chroma subsampling).
#[test]
fn output_depth_and_chroma_are_the_same_picture_at_finer_steps() {
    let dir = tmp("outfmt");
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    let (w, h, n) = (7usize, 5usize, 2usize);
    let input = dir.join("in.y4m");
    std::fs::write(&input, stream(w, h, n)).unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args = vec!["--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()];
        args.extend(extra);
        ok(&upscale(&rel, &input, &out, &args));
        std::fs::read(out).unwrap()
    };
    let (ow, oh) = (4 * w, 4 * h);
    let (luma, chroma420) = (ow * oh, 2 * ow.div_ceil(2) * oh.div_ceil(2));
    let words = |f: &[u8]| f.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as f64).collect::<Vec<_>>();

    let (header8, f8) = frames(&run("8.y4m", &[]), luma + chroma420);
    let (header10, f10) = frames(&run("10.y4m", &["--output-depth", "10"]), 2 * (luma + chroma420));
    let (header16, f16) = frames(&run("444p16.y4m", &["--output-chroma", "444", "--output-depth", "16"]), 2 * 3 * luma);
    assert_eq!(header8, format!("YUV4MPEG2 W{ow} H{oh} F25:1 Ip A1:1 C420jpeg XCOLORRANGE=LIMITED"));
    assert_eq!(header10, format!("YUV4MPEG2 W{ow} H{oh} F25:1 Ip A1:1 C420p10 XCOLORRANGE=LIMITED"));
    assert_eq!(header16, format!("YUV4MPEG2 W{ow} H{oh} F25:1 Ip A1:1 C444p16 XCOLORRANGE=LIMITED"));
    assert_eq!((f8.len(), f10.len(), f16.len()), (n, n, n));
    for k in 0..n {
        let (s10, s16) = (words(&f10[k]), words(&f16[k]));
        let worst10 = f8[k].iter().zip(&s10).map(|(&a, b)| (b / 4.0 - a as f64).abs()).fold(0.0, f64::max);
        assert!(worst10 <= 0.625 + 1e-3, "frame {k}: a 10-bit sample {worst10} 8-bit steps from the 8-bit run's");
        let worst16 = f8[k][..luma].iter().zip(&s16[..luma]).map(|(&a, b)| (b / 256.0 - a as f64).abs()).fold(0.0, f64::max);
        assert!(worst16 <= 0.502 + 1e-3, "frame {k}: a 16-bit luma sample {worst16} 8-bit steps from the 8-bit run's");
        // The finer steps are used: not every 10-bit sample is a multiple of 4.
        assert!(s10.iter().any(|v| v % 4.0 != 0.0), "frame {k}: 10-bit samples only at 8-bit steps");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_settings_fail_with_a_message() {
    let dir = tmp("bad");
    let rel = micro_release().to_path_buf();
    let input = dir.join("in.y4m");
    std::fs::write(&input, stream(7, 5, 1)).unwrap();
    let o = upscale(&rel, &input, &dir.join("out.y4m"), &["--noise-level", "400"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("invalid value '400' for '--noise-level") && err.contains("from 0 to 350"), "{err}");
    // The output (or the preview) is the input, by its name or through a hard link: refused,
    // and the input is left whole.
    let link = dir.join("link.y4m");
    std::fs::hard_link(&input, &link).unwrap();
    for (out, extra) in [(&input, vec![]), (&link, vec![]), (&dir.join("out.y4m"), vec!["--gif", link.to_str().unwrap()])] {
        let o = upscale(&rel, &input, out, &extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("is the input file"), "{err}");
        assert_eq!(std::fs::read(&input).unwrap(), stream(7, 5, 1), "the input was altered");
    }
    // The preview naming the output, which does not exist yet, by another spelling.
    let out = dir.join("new-out.y4m");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let o = upscale(&rel, &input, &out, &["--gif", dir.join("sub").join("..").join("new-out.y4m").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("is also the output (-o)") && !out.exists(), "{err}");
    // An output the job could not create is named before the models load: with an empty
    // release folder, before the release is found incomplete.
    let empty = dir.join("empty-release");
    std::fs::create_dir_all(&empty).unwrap();
    for (out, want) in [(dir.clone(), "is a folder"), (dir.join("no-such-folder").join("out.y4m"), "there is no folder")] {
        let o = upscale(&empty, &input, &out, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{err}");
    }
    // So is a START past the end of the input file, and a prompt given twice (as text and as
    // embeddings); --plan refuses the numbers a run refuses.
    for (extra, want) in [
        (vec!["--frames", "5:9"], "--frames 5:9 starts past the end: "),
        (vec!["--prompt", "a cat", "--prompt-embeds", "cat.safetensors"], "cannot be used with"),
        (vec!["--plan", "--noise-level", "400"], "a whole number from 0 to 350"),
    ] {
        let o = upscale(&empty, &input, &dir.join("out.y4m"), &extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{extra:?}: {err}");
    }
    // Not a y4m stream at all.
    std::fs::write(&input, b"RIFF....WAVEfmt ").unwrap();
    let o = upscale(&rel, &input, &dir.join("out.y4m"), &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("y4m stream header"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Interlaced frames: refused with the ffmpeg fix before the models load (before the empty
    // release folder is looked at).
    let progressive = stream(7, 5, 1);
    let at = progressive.iter().position(|&b| b == b'\n').unwrap();
    let header = String::from_utf8(progressive[..at].to_vec()).unwrap().replace(" Ip ", " It ");
    std::fs::write(&input, [header.as_bytes(), &progressive[at..]].concat()).unwrap();
    let o = upscale(&empty, &input, &dir.join("out.y4m"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("interlaced") && err.contains("bwdif"), "{err}");
    // Prompt embeddings of another text encoder's width: refused by name once the UNet loads,
    // before any window runs.
    std::fs::write(&input, &progressive).unwrap();
    let (pos, neg) = (dir.join("pos.safetensors"), dir.join("neg.safetensors"));
    embeds(&neg, 2);
    let wide: Vec<f32> = vec![0.5; 77 * 48];
    let view = safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, vec![1, 77, 48], bytemuck::cast_slice(&wide)).unwrap();
    safetensors::serialize_to_file([("prompt_embeds", view)], None, &pos).unwrap();
    let o = upscale(&rel, &input, &dir.join("out.y4m"), &["--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--prompt-embeds: embeddings of shape [1, 77, 48]") && err.contains("width of 32") && !err.contains("tile"), "{err}");
    // Embeddings of another token count than the negative prompt's: named with both sources.
    let short: Vec<f32> = vec![0.5; 10 * 32];
    let view = safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, vec![1, 10, 32], bytemuck::cast_slice(&short)).unwrap();
    safetensors::serialize_to_file([("prompt_embeds", view)], None, &pos).unwrap();
    let o = upscale(&rel, &input, &dir.join("out.y4m"), &["--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("[1, 10, 32] (from --prompt-embeds") && err.contains("one token count"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Weights that do not fit the GPU's memory (a simulated small GPU, `DIFFVSR_MAX_MEMORY`, which
/// needs Vulkan's or DX12's allocator report): the error names the model and says the weights
/// do not fit, not that smaller tiles would help.
#[test]
fn weights_that_do_not_fit_the_gpu_say_so() {
    let dir = tmp("weights-oom");
    let input = dir.join("in.y4m");
    std::fs::write(&input, stream(7, 5, 1)).unwrap();
    let (pos, neg) = embeds_pair(&dir);
    let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu"))
        .env("DIFFVSR_MAX_MEMORY", "64KiB")
        .args(["--weights", micro_release().to_str().unwrap(), "-i", input.to_str().unwrap(), "-o", dir.join("out.y4m").to_str().unwrap()])
        .args(["--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("DIFFVSR_MAX_MEMORY has no effect") {
        eprintln!("skipped: this backend reports no allocations to simulate a smaller GPU by");
        return;
    }
    assert!(!o.status.success() && err.contains("the weights of the DiffVSR UNet") && err.contains("do not fit") && !err.contains("smaller tiles"), "{err}");
    assert!(!dir.join("out.y4m").exists(), "an output was left");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--frames 0:6` and `--frames 6:100` of a 13-frame clip (3 windows, a mirrored tail), their
/// frames joined, equal the whole run byte for byte. 0:6 runs on a stream broken after the
/// windows it needs (so it stops reading there); 6:100 is cut at the clip's end with a note.
/// Bad ranges fail with a message. (Three runs: each idea shares one.)
#[test]
fn segments_join_to_the_whole_run_byte_for_byte() {
    let dir = tmp("seg");
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    let (w, h, n) = (7, 5, 13);
    let input = dir.join("in.y4m");
    let clip = stream(w, h, n);
    std::fs::write(&input, &clip).unwrap();
    let pe = ["--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap(), "--seed", "4"];
    let run = |name: &str, input: &Path, extra: &[&str]| -> (Output, Vec<u8>) {
        let out = dir.join(name);
        let mut args = pe.to_vec();
        args.extend(extra);
        let o = upscale(&rel, input, &out, &args);
        let bytes = std::fs::read(&out).unwrap_or_default();
        (o, bytes)
    };
    let (ow, oh) = (4 * w, 4 * h);
    let payload = ow * oh + 2 * (ow.div_ceil(2) * oh.div_ceil(2));
    let (o, whole) = run("whole.y4m", &input, &[]);
    ok(&o);
    let (hw, fw) = frames(&whole, payload);
    assert_eq!(fw.len(), n);

    // 0:6 needs windows 0 and 1, i.e. input frames 0..12: it runs on a stream broken inside
    // frame 12 (on which a whole run fails: `a_truncated_stream_names_the_frame_and_fails`).
    let frame_in = 6 + w * h + 2 * (w.div_ceil(2) * h.div_ceil(2));
    let broken = dir.join("broken.y4m");
    std::fs::write(&broken, &clip[..clip.len() - frame_in / 2]).unwrap();
    let (o, a) = run("a.y4m", &broken, &["--frames", "0:6"]);
    ok(&o);
    // END past the end: cut at 13, with a note.
    let (o, b) = run("b.y4m", &input, &["--frames", "6:100"]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("only 13 frames"), "{err}");
    let (ha, fa) = frames(&a, payload);
    let (hb, fb) = frames(&b, payload);
    assert_eq!((ha.as_str(), hb.as_str()), (hw.as_str(), hw.as_str()), "a segment has the whole run's header");
    assert_eq!((fa.len(), fb.len()), (6, 7));
    // One header, then the frames of both segments: the whole run's bytes.
    let mut joined = a.clone();
    joined.extend_from_slice(&b[hb.len() + 1..]);
    assert!(joined == whole, "segments 0:6 + 6:100 differ from the whole run (frames equal: {:?})", fa.iter().chain(&fb).zip(&fw).map(|(x, y)| x == y).collect::<Vec<_>>());
    // (`START:` with no END: `plan_prints_windows_segments_and_memory_and_runs_nothing`.)

    // Bad ranges: a clear message and a non-zero exit.
    for (range, msg) in [("6:6", "START must be below END"), ("7:3", "START must be below END"), ("a:6", "expected START:END"), ("6", "expected START:END"), ("13:20", "only 13 frames")] {
        let (o, _) = run("bad.y4m", &input, &["--frames", range]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "--frames {range} must fail");
        assert!(err.contains(msg), "--frames {range}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Without a command the binary is the filter: stdin to stdout, or `-i`/`-o`, the same bytes as
/// `upscale`; `--help` still lists the commands.
#[test]
fn no_command_is_the_upscale_filter() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tmp("nocmd");
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    let input = dir.join("in.y4m");
    let clip = stream(7, 5, 3);
    std::fs::write(&input, &clip).unwrap();
    let extra = ["--seed", "6", "--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()];
    let mut common = vec!["--weights", rel.to_str().unwrap(), "--steps", "1", "--quiet"];
    common.extend(extra);
    let sub = dir.join("sub.y4m");
    ok(&upscale(&rel, &input, &sub, &extra));
    let want = std::fs::read(&sub).unwrap();
    assert!(want.len() > clip.len(), "upscale wrote {} bytes", want.len());

    // stdin → stdout.
    let mut child = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu"))
        .args(&common)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = std::thread::spawn(move || stdin.write_all(&clip));
    let o = child.wait_with_output().unwrap();
    feed.join().unwrap().unwrap();
    ok(&o);
    assert!(o.stdout == want, "the filter on stdin/stdout differs from upscale ({} vs {} bytes)", o.stdout.len(), want.len());

    // -i / -o at the top level.
    let top = dir.join("top.y4m");
    let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu")).args(&common).arg("-i").arg(&input).arg("-o").arg(&top).output().unwrap();
    ok(&o);
    assert!(std::fs::read(&top).unwrap() == want, "the filter with -i/-o differs from upscale");

    // `-i - -o -` are stdin and stdout, as in ffmpeg's command lines. A job whose stderr's
    // reader has gone (`2>&1 >out | head`) finishes all the same, with exit code 0 (without
    // --quiet, so it has notes to write).
    // The binary run by `cmd` with the reader of one of its streams gone before it writes.
    let closing = |cmd: &mut Command, stderr: bool| {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        if stderr {
            drop(child.stderr.take());
        } else {
            drop(child.stdout.take());
        }
        child.wait_with_output().unwrap()
    };
    let bin = || Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu"));
    let noisy: Vec<&str> = common.iter().copied().filter(|&a| a != "--quiet").collect();
    let o = closing(bin().args(&noisy).args(["-i", "-", "-o", "-"]).stdin(std::fs::File::open(&input).unwrap()), true);
    assert!(o.status.success(), "with stderr closed: {:?}", o.status);
    assert!(o.stdout == want, "-i - -o - differs from upscale ({} vs {} bytes)", o.stdout.len(), want.len());
    // A report whose reader has gone (`devices | head -c 1`) ends quietly too; an empty setting
    // variable is no setting.
    let o = closing(bin().arg("devices").env("DIFFVSR_BACKEND", ""), false);
    assert!(o.status.success(), "devices with stdout closed: {:?}: {}", o.status, String::from_utf8_lossy(&o.stderr));
    // A command with work after its report still does it (here the JSON written after the
    // report's lines), and ends with its own exit code.
    let json = dir.join("report.json");
    let forward = ["forward", "--model", "te3dvae-decoder", "--random-weights", "1", "--random-inputs", "1x8x8", "--report", "--config"];
    let o = closing(bin().args(forward).arg(data("te3dvae/config.json")).arg("--json").arg(&json), false);
    assert!(o.status.success() && json.is_file(), "forward --report with stdout closed: {:?}: {}", o.status, String::from_utf8_lossy(&o.stderr));

    // --help lists the commands and the filter's options; a filter option with a command fails.
    let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{help}");
    for cmd in ["upscale", "devices", "fetch-weights", "encode-prompt", "forward", "convert", "--frames", "--steps"] {
        assert!(help.contains(cmd), "--help lacks {cmd}: {help}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu")).args(["--steps", "2", "devices"]).output().unwrap();
    assert!(!o.status.success(), "--steps before a command must fail");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The job as people run it: `ffmpeg … -f yuv4mpegpipe - | diffvsr-wgpu | ffmpeg -f
/// yuv4mpegpipe -i - …` (7 frames of testsrc2 at 8×6, tiny models, 1 step): 7 frames of
/// 32×24 come out of the second ffmpeg. Skipped, with a note, where ffmpeg is not installed
/// (`.ci/run` installs it).
#[test]
fn between_two_ffmpegs() {
    use std::process::Stdio;
    if Command::new("ffmpeg").arg("-version").output().map_or(true, |o| !o.status.success()) {
        eprintln!("note: ffmpeg is not installed: between_two_ffmpegs skipped (.ci/run installs it)");
        return;
    }
    let dir = tmp("ffmpeg");
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    let mut src = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=8x6:rate=8", "-frames:v", "7", "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut filter = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu"))
        .arg("--weights")
        .arg(&rel)
        .args(["--steps", "1", "--quiet", "--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()])
        .stdin(Stdio::from(src.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sink = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-f", "yuv4mpegpipe", "-i", "-", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .stdin(Stdio::from(filter.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = sink.wait_with_output().unwrap();
    let f = filter.wait_with_output().unwrap();
    assert!(src.wait().unwrap().success(), "the source ffmpeg failed");
    assert!(f.status.success(), "diffvsr-wgpu failed: {}", String::from_utf8_lossy(&f.stderr));
    assert!(out.status.success(), "the sink ffmpeg failed: {}", String::from_utf8_lossy(&out.stderr));
    let frame = 32 * 24 + 2 * (16 * 12);
    assert_eq!(out.stdout.len(), 7 * frame, "expected 7 frames of 32×24 4:2:0 ({} bytes each)", frame);
    let luma = &out.stdout[..32 * 24];
    assert!(luma.iter().any(|&v| v != luma[0]), "the first frame's luma is constant");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--plan` prints the windows, the segment and the memory estimate, and writes no video.
#[test]
fn plan_prints_windows_segments_and_memory_and_runs_nothing() {
    let dir = tmp("plan");
    let rel = release(&dir);
    let input = dir.join("in.y4m");
    std::fs::write(&input, stream(7, 5, 13)).unwrap();
    let out = dir.join("out.y4m");
    let plan = |extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu")).arg("--weights").arg(&rel).arg("-i").arg(&input).arg("-o").arg(&out).arg("--plan").args(extra).output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (ok_, text, err) = plan(&[]);
    assert!(ok_, "{err}");
    // A backend or adapter named and not there fails, as for a run.
    for (extra, want) in [(["--backend", "foo"], "unknown backend 'foo'"), (["--adapter", "no such gpu"], "no adapter name contains that")] {
        let (ok_, _, err) = plan(&extra);
        // (Where no adapter exists at all, the second says that instead.)
        assert!(!ok_ && (err.contains(want) || err.contains("no GPU adapter found")), "{extra:?}: {err}");
    }
    // stdin redirected from the file is measured as the file is (on Linux).
    if cfg!(target_os = "linux") {
        let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu")).arg("--weights").arg(&rel).arg("--plan").stdin(std::fs::File::open(&input).unwrap()).output().unwrap();
        assert!(String::from_utf8_lossy(&o.stdout).contains("13 frames (from the file size)"), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for want in [
        "13 frames",
        "28x20",
        "windows 0..3 of 3",
        "matrix:   BT.601 in (7x5), BT.601 out (28x20)",
        "window 2: padded frames 8..16, input frames [8, 9, 10, 11, 12, 11, 10, 9]",
        "memory (estimate)",
        "DiffVSR_UNet.pt",
    ] {
        assert!(text.contains(want), "--plan lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("missing"), "the tiny release's weights are there:\n{text}");
    assert!(!out.exists(), "--plan wrote the output");
    let (ok_, text, err) = plan(&["--frames", "0:6"]);
    assert!(ok_, "{err}");
    assert!(text.contains("output frames 0..6; windows 0..2 of 3; input frames 0..12"), "{text}");
    assert!(!text.contains("window 2:"), "{text}");
    // START with no END runs to the clip's end.
    let (ok_, text, err) = plan(&["--frames", "9:"]);
    assert!(ok_, "{err}");
    assert!(text.contains("output frames 9..13; windows 1..3 of 3"), "{text}");
    let (ok_, _, err) = plan(&["--frames", "13:20"]);
    assert!(!ok_ && err.contains("only 13 frames"), "{err}");
    // Windows per UNet call: auto says how it picks (one on a software adapter, as the run
    // does); a count scales the job's buffers.
    assert!(text.contains("windows per UNet call: auto"), "{text}");
    if diffvsr_wgpu::testutil::test_gpu().is_software() {
        assert!(text.contains("auto: 1 (a software adapter"), "{text}");
    }
    let (ok_, text, err) = plan(&["--windows-per-call", "2"]);
    assert!(ok_ && text.contains("windows per UNet call: 2") && text.contains("2 CFG windows [4,7,8,8,8]") && text.contains("at most 16 input frames"), "{err}{text}");
    // Without guidance a window is one sample, not a pair.
    let (ok_, text, err) = plan(&["--windows-per-call", "2", "--guidance", "1"]);
    assert!(ok_ && text.contains("2 windows (no guidance: the positive prompt alone) [2,7,8,8,8]"), "{err}{text}");
    let (ok_, _, err) = plan(&["--windows-per-call", "9"]);
    assert!(!ok_ && err.contains("from 1 to 8"), "{err}");
    // No call holds more windows than the clip's three.
    let (ok_, text, err) = plan(&["--windows-per-call", "8"]);
    assert!(ok_ && text.contains("windows per UNet call: 3 (--windows-per-call 8: no call holds more windows than the run has)"), "{err}{text}");
    // Random weights read nothing from disk, and the plan does not send the user to fetch any.
    let (ok_, text, err) = plan(&["--random-weights", "1"]);
    assert!(ok_ && text.contains("weights:          seeded random (--random-weights)") && !text.contains("DiffVSR_UNet.pt") && !text.contains("fetch-weights"), "{err}{text}");
    // A stream of a header only: nothing to run, and no --frames it was not given.
    std::fs::write(&input, b"YUV4MPEG2 W7 H5 F25:1 C444\n").unwrap();
    let (ok_, text, err) = plan(&[]);
    assert!(ok_ && text.contains("the input has no frames") && !err.contains("--frames"), "{err}{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--gif` with a `--frames` segment, progress not silenced: the GIF holds the segment's frames
/// at the output's size (28×20, under the 320-pixel cap) with the delay of 25 fps, and decodes;
/// stderr (not a terminal here) has one plain progress line per window of the segment, with
/// frame counts and an ETA (the input is a file, so its length is known), and no `\r`.
#[test]
fn gif_preview_of_a_segment_and_progress_lines() {
    let dir = tmp("gif");
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    let input = dir.join("in.y4m");
    std::fs::write(&input, stream(7, 5, 13)).unwrap();
    let (out, gif) = (dir.join("out.y4m"), dir.join("preview.gif"));
    let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu"))
        .arg("--weights")
        .arg(&rel)
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .arg("--gif")
        .arg(&gif)
        // One window per UNet call, as auto picks on a software adapter (on a GPU it would
        // group these small frames, and print a line per group).
        .args(["--steps", "1", "--windows-per-call", "1", "--frames", "2:100", "--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()])
        .output()
        .unwrap();
    ok(&o);
    let payload = 28 * 20 + 2 * (14 * 10);
    // END past the clip's end (as every part may ask for the same length): cut at 13.
    assert_eq!(frames(&std::fs::read(&out).unwrap(), payload).1.len(), 11);

    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut d = opts.read_info(std::fs::File::open(&gif).unwrap()).unwrap();
    assert_eq!((d.width(), d.height()), (28, 20));
    let mut n = 0;
    while let Some(f) = d.read_next_frame().unwrap() {
        assert_eq!((f.width, f.height, f.delay), (28, 20, 4), "frame {n}");
        n += 1;
    }
    assert_eq!(n, 11, "one GIF frame per output frame of the segment");

    // 2:100 runs windows 0, 1 and 2 of the clip; the frames to write are the 11 the input
    // has from START on (its length is known from the file), never the 98 asked for.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains('\r'), "plain lines when stderr is not a terminal: {err:?}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("frames ")).collect();
    assert_eq!(lines.len(), 3, "one progress line per window: {err}");
    for (k, l) in lines.iter().enumerate() {
        assert!(l.contains(&format!("window {}/3 step 1/1", k + 1)) && l.contains("/11,") && l.contains("ETA"), "{l}");
    }
    assert!(err.contains("11 out") && err.contains("the input has only 13 frames"), "{err}");

    // A stream of a header only: its output is the header alone, and no GIF (one of no frame
    // is no picture: viewers and ffmpeg refuse it).
    std::fs::write(&input, stream(7, 5, 0)).unwrap();
    let none = dir.join("none.gif");
    ok(&upscale(&rel, &input, &out, &["--gif", none.to_str().unwrap(), "--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()]));
    assert!(!none.exists(), "a GIF of no frame");
    let header_only = String::from_utf8(std::fs::read(&out).unwrap()).unwrap();
    assert!(header_only.starts_with("YUV4MPEG2 W28 H20 ") && !header_only.contains("FRAME"), "{header_only}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Ctrl-C (SIGINT), and SIGTERM as `kill` or a container's stop sends it, while the input
/// arrives slowly: the job stops after the frame it is writing with exit code 130 and a message
/// saying what was written; the output holds only whole frames, and the GIF preview is closed
/// with the same frames.
#[cfg(unix)]
#[test]
fn a_stop_signal_leaves_whole_frames() {
    stop_by_signal("INT");
    stop_by_signal("TERM");
}

/// The filter on the micro release as a child with piped stdin, stdout and stderr: one step,
/// quiet, one window per call (the first output frame then comes from the first 8 input
/// frames; on a GPU, auto would wait for a group's frames).
#[cfg(unix)]
fn spawn_filter(rel: &Path, pos: &Path, neg: &Path, extra: &[&str]) -> std::process::Child {
    use std::process::Stdio;
    Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu"))
        .arg("--weights")
        .arg(rel)
        .args(["--steps", "1", "--quiet", "--windows-per-call", "1", "--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[cfg(unix)]
fn stop_by_signal(signal: &str) {
    use std::io::{Read, Write};
    let dir = tmp(&format!("sig{signal}"));
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    let (w, h, n) = (7, 5, 13);
    let clip = stream(w, h, n);
    let header_len = clip.iter().position(|&b| b == b'\n').unwrap() + 1;
    let frame_in = 6 + w * h + 2 * (w.div_ceil(2) * h.div_ceil(2));
    let gif = dir.join("preview.gif");
    let mut child = spawn_filter(&rel, &pos, &neg, &["--gif", gif.to_str().unwrap()]);
    // The first window's 8 frames at once; the rest, slowly, only after the signal.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let mut stdin = child.stdin.take().unwrap();
    let feed = std::thread::spawn(move || {
        let first = header_len + 8 * frame_in;
        stdin.write_all(&clip[..first]).unwrap();
        stdin.flush().unwrap();
        let _ = wait.recv();
        for f in clip[first..].chunks(frame_in) {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if stdin.write_all(f).is_err() {
                return; // the filter has stopped reading
            }
        }
    });
    let (ow, oh) = (4 * w, 4 * h);
    let out_frame = 6 + ow * oh + 2 * (ow.div_ceil(2) * oh.div_ceil(2));
    let mut stdout = child.stdout.take().unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the header and the first output frame have arrived.
    while out.iter().position(|&b| b == b'\n').is_none_or(|nl| out.len() < nl + 1 + out_frame) {
        let k = stdout.read(&mut buf).unwrap();
        assert!(k > 0, "the filter ended before its first frame");
        out.extend_from_slice(&buf[..k]);
    }
    let killed = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    go.send(()).unwrap();
    stdout.read_to_end(&mut out).unwrap();
    let o = child.wait_with_output().unwrap();
    feed.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "SIG{signal}: exit status {:?}: {err}", o.status);
    assert!(err.contains("stopped by a signal") && err.contains("whole output frames"), "SIG{signal}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let nl = out.iter().position(|&b| b == b'\n').unwrap();
    let body = out.len() - (nl + 1);
    assert_eq!(body % out_frame, 0, "{body} bytes after the header: not whole frames of {out_frame}");
    let written = body / out_frame;
    assert!((1..n).contains(&written), "{written} frames written");
    assert!(err.contains(&format!("stopped after {written} whole output frames")), "{err}");
    frames(&out, out_frame - 6);
    let mut d = gif::DecodeOptions::new().read_info(std::fs::File::open(&gif).unwrap()).unwrap();
    let mut g = 0;
    while d.read_next_frame().unwrap().is_some() {
        g += 1;
    }
    assert_eq!(g, written, "the GIF holds the frames written");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One Ctrl-C stops the filter while its input stalls: stdin stays open after the first
/// window's 8 frames, and once the frames that window makes final are out, the filter, blocked
/// waiting for the next frame, exits 130 at once with those whole frames written (the input is
/// read on a thread of its own; the job waits for it in short steps, looking for the stop).
#[cfg(unix)]
#[test]
fn a_stop_signal_ends_a_stalled_input() {
    use std::io::{Read, Write};
    let dir = tmp("stall");
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    let (w, h) = (7, 5);
    let mut child = spawn_filter(&rel, &pos, &neg, &[]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&stream(w, h, 8)).unwrap();
    stdin.flush().unwrap();
    // The first window makes output frames 0 to 3 final; then the job waits for frame 8.
    let (ow, oh) = (4 * w, 4 * h);
    let out_frame = 6 + ow * oh + 2 * (ow.div_ceil(2) * oh.div_ceil(2));
    let mut stdout = child.stdout.take().unwrap();
    let (mut out, mut buf) = (Vec::new(), [0u8; 4096]);
    while out.iter().position(|&b| b == b'\n').is_none_or(|nl| out.len() < nl + 1 + 4 * out_frame) {
        let k = stdout.read(&mut buf).unwrap();
        assert!(k > 0, "the filter ended before its first 4 frames");
        out.extend_from_slice(&buf[..k]);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed().as_secs() > 30 {
            let _ = child.kill();
            panic!("one SIGINT did not end the filter waiting for input within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(stdin);
    stdout.read_to_end(&mut out).unwrap();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("stopped after 4 whole output frames") && !log.contains("panicked"), "{log}");
    let nl = out.iter().position(|&b| b == b'\n').unwrap();
    assert_eq!(out.len() - (nl + 1), 4 * out_frame, "the 4 whole frames and nothing more");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Spatial tiles, end to end: a 21×6 clip (latent 24×8) with `--tile 16x8 --tile-overlap 8`
/// (width × height) runs both models in 2 feathered tiles and writes every frame at 4× size; `--plan` lists the
/// tiles; bad tile flags fail with a message before any model loads. (`--tile auto` under a
/// small binding limit is `tile_choice::tests::tile_auto_fits_the_binding_limit`; one tile equal to
/// the untiled job is checked in `upscale_is_4x_frame_exact_and_deterministic`.)
#[test]
fn large_frames_run_in_feathered_tiles() {
    let dir = tmp("tiles");
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    let (w, h, n) = (21, 6, 2);
    let input = dir.join("in.y4m");
    std::fs::write(&input, stream(w, h, n)).unwrap();
    let pe = ["--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap(), "--seed", "5"];
    let run = |extra: &[&str]| -> (Output, Vec<u8>) {
        let out = dir.join("out.y4m");
        let _ = std::fs::remove_file(&out);
        let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu")).arg("--weights").arg(&rel).arg("-i").arg(&input).arg("-o").arg(&out).args(["--steps", "1"]).args(pe).args(extra).output().unwrap();
        (o, std::fs::read(&out).unwrap_or_default())
    };
    let (o, tiled) = run(&["--tile", "16x8", "--tile-overlap", "8"]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    let two = "2x1 = 2 tiles of 16x8, overlapping by at least 8, feathered";
    assert!(err.contains(&format!("tiles: UNet {two}")) && err.contains(&format!("VAE {two}")), "{err}");
    // The summary splits the job's time: "…, T s (denoising D s, decoding and writing E s); …"
    // (tenths of a second: on these tiny models either part may print 0.0).
    let secs = |after: &str| -> f64 { err.split(after).nth(1).and_then(|r| r.split(' ').next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no '{after}' time in {err}")) };
    let total: f64 = err.split(" s (denoising ").next().and_then(|h| h.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no total time in {err}"));
    let (denoising, decoding) = (secs("(denoising "), secs("decoding and writing "));
    assert!(denoising >= 0.0 && decoding >= 0.0 && denoising + decoding <= total + 0.1, "{err}");
    let (ow, oh) = (4 * w, 4 * h);
    let (header, f) = frames(&tiled, ow * oh + 2 * (ow.div_ceil(2) * oh.div_ceil(2)));
    assert!(header.starts_with(&format!("YUV4MPEG2 W{ow} H{oh} ")), "{header}");
    assert_eq!(f.len(), n);
    assert!(f.iter().all(|fr| fr[..ow * oh].iter().any(|&v| v != fr[0])), "a constant output frame");

    // --plan lists fixed tiles (and loads nothing); a square side covers the 8 rows alike.
    let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu")).arg("--weights").arg(&rel).arg("-i").arg(&input).args(["--plan", "--tile", "16"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains(&format!("--tile 16: UNet and VAE {two} (columns from 0,8; rows from 0)")), "{text}");
    assert!(text.contains("[2,7,8,8,16]"), "{text}");
    let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu")).arg("--weights").arg(&rel).arg("-i").arg(&input).args(["--plan", "--gpu-memory", "10GiB"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("tiles:    auto: picked when the models load") && text.contains("GPU memory:       10.0 GiB (--gpu-memory)"), "{text}");

    for (args, msg) in [
        (&["--tile", "12"][..], "--tile 12: must be a multiple of 8"),
        (&["--tile", "big"][..], "expected auto, a size"),
        (&["--tile", "16x"][..], "or WIDTHxHEIGHT"),
        // An overlap not below a side that cuts the frame (the 8 columns; the 16 rows span its 8).
        (&["--tile", "8x16", "--tile-overlap", "8"][..], "--tile-overlap 8 must be below the tile (8x16)"),
        (&["--tile", "16", "--tile-overlap", "16"][..], "--tile-overlap 16 must be below --tile 16"),
        (&["--tile-overlap", "4"][..], "--tile-overlap 4: must be a multiple of 8"),
        // Less GPU memory than the job holds before its first tile: said before any frame runs.
        (&["--gpu-memory", "1KiB"][..], "does not fit the GPU's memory even in 8x8 tiles"),
        (&["--gpu-memory", "lots"][..], "is not a size"),
    ] {
        let (o, _) = run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} must fail");
        assert!(err.contains(msg), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The other chroma formats end to end (4:2:0 8- and 10-bit are above): 4:2:2 and 4:1:1 8-bit, 4:4:4
/// 12-bit (little-endian 16-bit samples) and mono, 2 frames of 7×5 each. The output keeps the
/// format, depth and tags at 4× size, every sample fits the depth, and the luma is not flat;
/// a plan of 4:1:1 kept says how to get 4:2:0, and one of 4:2:0 asked for does not.
#[test]
fn other_chroma_formats_and_depths_keep_their_format() {
    let dir = tmp("formats");
    let rel = micro_release().to_path_buf();
    let (pos, neg) = embeds_pair(&dir);
    let (w, h, n) = (7usize, 5usize, 2usize);
    // (C tag, extra header tag, chroma plane size for (w, h), bytes per sample)
    let plane = |cw: usize, ch: usize| cw * ch;
    for (tag, extra, chroma_w, chroma_h, bytes) in [
        ("422", "", 4usize, 5usize, 1usize),
        ("411", " XYSCSS=411", 2, 5, 1),
        ("444p12", " XYSCSS=444P12", 7, 5, 2),
        ("mono", "", 0, 0, 1),
    ] {
        let max: u32 = if bytes == 2 { 4095 } else { 255 };
        let mut s = format!("YUV4MPEG2 W{w} H{h} F24:1 Ip A1:1 C{tag}{extra}\n").into_bytes();
        for f in 0..n {
            s.extend_from_slice(b"FRAME\n");
            let samples = plane(w, h) + 2 * plane(chroma_w, chroma_h);
            for i in 0..samples {
                let v = (((i * 37 + f * 11) as u32).wrapping_mul(2654435761) >> 7) % (max + 1);
                if bytes == 2 {
                    s.extend_from_slice(&(v as u16).to_le_bytes());
                } else {
                    s.push(v as u8);
                }
            }
        }
        let input = dir.join(format!("in-{tag}.y4m"));
        std::fs::write(&input, s).unwrap();
        let out = dir.join(format!("out-{tag}.y4m"));
        let o = upscale(&rel, &input, &out, &["--prompt-embeds", pos.to_str().unwrap(), "--negative-prompt-embeds", neg.to_str().unwrap()]);
        ok(&o);
        // The note on a 4:1:1 output: not under --quiet; in --plan; on stderr before the models
        // load (here a run stopped by a missing --weights folder, after it).
        const NOTE: &str = "note: the input is 4:1:1";
        assert!(!String::from_utf8_lossy(&o.stderr).contains(NOTE), "{tag}");
        let plan = |extra: &[&str]| {
            let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu")).arg("--weights").arg(&rel).arg("-i").arg(&input).arg("--plan").args(extra).output().unwrap();
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(o.status.success() && text.contains("output:"), "{tag} {extra:?}: {}", String::from_utf8_lossy(&o.stderr));
            text
        };
        assert_eq!(plan(&[]).contains("--output-chroma 420 writes 4:2:0"), tag == "411", "{tag}");
        assert!(!plan(&["--output-chroma", "420"]).contains("--output-chroma 420 writes"), "{tag}");
        let missing = dir.join("no-such-release");
        let o = Command::new(env!("CARGO_BIN_EXE_diffvsr-wgpu")).arg("--random-weights").arg("1").arg("--weights").arg(&missing).arg("-i").arg(&input).arg("-o").arg(&out).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("no such folder"), "{tag}: {err}");
        assert_eq!(err.contains(NOTE), tag == "411", "{tag}: {err}");
        let (ow, oh) = (4 * w, 4 * h);
        let (ocw, och) = match tag {
            "422" => (ow.div_ceil(2), oh),
            "411" => (ow.div_ceil(4), oh),
            "mono" => (0, 0),
            _ => (ow, oh),
        };
        let payload = bytes * (ow * oh + 2 * ocw * och);
        let bytes_out = std::fs::read(&out).unwrap();
        let (header, fr) = frames(&bytes_out, payload);
        assert_eq!(header, format!("YUV4MPEG2 W{ow} H{oh} F24:1 Ip A1:1 C{tag}{extra}"), "{tag}");
        assert_eq!(fr.len(), n, "{tag}");
        for (k, f) in fr.iter().enumerate() {
            let samples: Vec<u32> = if bytes == 2 { f.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect() } else { f.iter().map(|&b| b as u32).collect() };
            assert!(samples.iter().all(|&v| v <= max), "{tag} frame {k}: a sample above {max}");
            let luma = &samples[..ow * oh];
            assert!(luma.iter().any(|&v| v != luma[0]), "{tag} frame {k}: flat luma");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
