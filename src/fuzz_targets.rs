//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz, see TESTING.md), shared with the
//! `cargo test` replay of their corpora (`fuzz/corpus/<target>/`). Each takes arbitrary bytes
//! and must return without a panic, an abort, a hang or an allocation the input does not pay
//! for; whatever a reader refuses is fine.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::checkpoint;
use crate::config::{UNet2DConfig, VaeConfig, VideoUNetConfig};
use crate::models::clip_text::ClipTextConfig;
use crate::models::video_vae::VideoVaeConfig;
use crate::tokenizer::{ClipTokenizer, SpecialTokens};
use crate::weights::WeightStore;

/// A target: arbitrary bytes in, nothing out, never a panic.
pub type Target = fn(&[u8]);

/// The targets, by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*`).
pub const TARGETS: [(&str, Target); 7] = [
    ("safetensors", safetensors),
    ("checkpoint", torch_checkpoint),
    ("pickle", pickle),
    ("config", configs),
    ("tokenizer_text", tokenizer_text),
    ("tokenizer_files", tokenizer_files),
    ("y4m", y4m),
];

/// A scratch folder of this process and call (targets read files by path).
fn scratch() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = crate::testutil::scratch_dir("fuzz").join(N.fetch_add(1, Ordering::Relaxed).to_string());
    std::fs::create_dir_all(&d).expect("a scratch folder");
    d
}

/// Reads every tensor of a store the way the models and `convert` do.
fn read_all(p: &Path) {
    if let Ok(mut s) = WeightStore::open(p) {
        for k in s.keys() {
            let _ = s.raw(&k);
            if let Some(shape) = s.shape(&k) {
                let _ = s.take(&k, &shape);
            }
        }
        let _ = s.finish();
    }
}

/// A safetensors file through the weight store (and `convert`).
pub fn safetensors(data: &[u8]) {
    let d = scratch();
    let p = d.join("in.safetensors");
    std::fs::write(&p, data).expect("scratch write");
    read_all(&p);
    let _ = checkpoint::convert::convert(&p, &d.join("out.safetensors"), None, None);
    let _ = std::fs::remove_dir_all(&d);
}

/// A `torch.save` zip archive: the zip directory, the pickle, storage offsets, sizes and
/// strides, through the reader, the weight store and `convert`.
pub fn torch_checkpoint(data: &[u8]) {
    let name = Path::new("fuzz.pt");
    let _ = checkpoint::open(name, data, None);
    let _ = checkpoint::open(name, data, Some("ema"));
    let d = scratch();
    let p = d.join("in.pt");
    std::fs::write(&p, data).expect("scratch write");
    read_all(&p);
    let _ = checkpoint::convert::convert(&p, &d.join("out.safetensors"), None, Some(crate::DType::F16));
    let _ = std::fs::remove_dir_all(&d);
}

/// The restricted pickle machine alone (no zip around it), and the state-dict choice.
pub fn pickle(data: &[u8]) {
    if let Ok(pk) = checkpoint::pickle::unpickle(data) {
        let _ = pk.describe(&pk.root);
        let _ = checkpoint::select(&pk, None);
        let _ = checkpoint::select(&pk, Some("ema/x"));
    }
}

/// The same JSON as every model config the engine reads, validated and then used the way the
/// models use it.
pub fn configs(data: &[u8]) {
    if let Ok(c) = serde_json::from_slice::<UNet2DConfig>(data) {
        if c.validate().is_ok() {
            let _ = (0..c.block_out_channels.len()).map(|i| c.heads(i)).sum::<usize>() + c.time_embed_dim();
        }
    }
    if let Ok(c) = serde_json::from_slice::<VaeConfig>(data) {
        let _ = c.validate();
    }
    if let Ok(c) = serde_json::from_slice::<VideoUNetConfig>(data) {
        if c.validate().is_ok() {
            let b = c.base_2d();
            let _ = (c.msatten(), (0..b.block_out_channels.len()).map(|i| b.block_out_channels[i] / b.heads(i)).sum::<usize>());
        }
    }
    if let Ok(c) = serde_json::from_slice::<ClipTextConfig>(data) {
        if c.validate().is_ok() {
            let _ = (c.head_dim(), c.flops(2, c.max_position_embeddings));
        }
    }
    if let Ok(c) = serde_json::from_slice::<VideoVaeConfig>(data) {
        let _ = c.validate_te3dvae();
        let _ = c.vae3d_as_2d();
    }
}

/// Prompt text (arbitrary bytes, lossily UTF-8) through the SD×4 release's CLIP tokenizer.
pub fn tokenizer_text(data: &[u8]) {
    static TOK: OnceLock<ClipTokenizer> = OnceLock::new();
    let tok = TOK.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/clip_tokenizer");
        ClipTokenizer::from_dir(&dir).expect("the test tokenizer loads")
    });
    let text = String::from_utf8_lossy(data);
    if let Ok(ids) = tok.encode(&text) {
        assert_eq!(ids.len(), tok.max_length, "every prompt becomes max_length ids");
        let _ = tok.decode(&ids);
        // A prompt with a cut-off end filled every slot: its end token is the last id.
        if let Ok(Some(_)) = tok.cut_off(&text) {
            if !text.to_lowercase().contains("<|endoftext|>") {
                assert_eq!(ids.iter().position(|&i| i == tok.eos_id), Some(tok.max_length - 1), "a cut prompt fills every slot");
            }
        }
    }
}

/// Tokenizer files: `vocab.json`, `merges.txt` and `tokenizer_config.json`, separated by NUL
/// bytes in the input.
pub fn tokenizer_files(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (vocab, merges, config) = (parts.next().unwrap_or(b""), parts.next().unwrap_or(b""), parts.next());
    let d = scratch();
    std::fs::write(d.join("vocab.json"), vocab).expect("scratch write");
    std::fs::write(d.join("merges.txt"), merges).expect("scratch write");
    if let Some(c) = config {
        std::fs::write(d.join("tokenizer_config.json"), c).expect("scratch write");
    }
    let specials = SpecialTokens::from_dir(&d).unwrap_or_else(|_| SpecialTokens::clip_defaults());
    if let Ok(t) = ClipTokenizer::new(&d.join("vocab.json"), &d.join("merges.txt"), specials) {
        // Padding fills `model_max_length` ids: the product checks it against the text
        // encoder's positions first (`TextEncoder::new`), so the harness stays within them.
        if t.max_length <= 4096 {
            let _ = t.encode("a photo of a cat, 4k!");
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// A y4m stream as the filter reads it: the header, then every frame until the end or the first
/// error, each converted to RGB and back (the job's colour path); each frame the reader accepts
/// must write and read back unchanged, under the input's header and its ×4 output header.
pub fn y4m(data: &[u8]) {
    use crate::video::color::{frame_to_rgb, rgb_to_frame, MatrixChoice, YuvParams};
    use crate::video::y4m::{Reader, Writer};
    let Ok(mut reader) = Reader::new(data) else { return };
    let header = reader.header().clone();
    let _ = header.scaled(4).map(|h| h.to_bytes());
    // `--output-chroma 444 --output-depth 16`: its header must read back as that format.
    let deepest = crate::video::y4m::OutputFormat { chroma: Some(crate::video::y4m::Chroma::C444), depth: Some(16) };
    if let Ok(h) = deepest.header(&header, 4) {
        let back = crate::video::y4m::Header::parse(&h.to_bytes()).expect("an output header reads back");
        assert_eq!(back, h);
    }
    let params = YuvParams { matrix: MatrixChoice::Auto.resolve(header.width, header.height), range: header.range, depth: header.depth };
    let mut writer = Writer::new(Vec::new(), header.clone()).expect("writing to memory");
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = reader.read_frame() {
        let rgb = frame_to_rgb(&frame, &params);
        assert_eq!(rgb.len(), 3 * frame.format.width as usize * frame.format.height as usize);
        let back = rgb_to_frame(&rgb, frame.format, &params);
        assert_eq!(back.format, frame.format);
        writer.write_frame(&frame).expect("writing to memory");
        frames.push(frame);
    }
    let written = writer.into_inner();
    let mut again = Reader::new(written.as_slice()).expect("the writer's header reads back");
    assert_eq!(again.header().to_bytes(), header.to_bytes(), "the header round-trips");
    for f in &frames {
        let g = again.read_frame().expect("a written frame reads back").expect("as many frames as written");
        assert!(g.planes == f.planes && g.params == f.params, "a frame round-trips");
    }
    assert!(matches!(again.read_frame(), Ok(None)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::FileDtype;

    /// Every committed corpus input (seeds and regression cases of each fuzz target) goes
    /// through its target, as in a fuzzing run: nothing may panic.
    #[test]
    fn fuzz_corpora_replay_without_panics() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(files.len() >= 3, "{}: the corpus holds {} inputs", dir.display(), files.len());
            for f in files {
                let data = std::fs::read(&f).unwrap();
                eprintln!("{name}: {}", f.display());
                target(&data);
            }
        }
    }

    /// Writes the regression seeds that the readers' unit tests build in code (run once with
    /// `cargo test --lib write_regression_seeds -- --ignored`; the files are committed).
    #[test]
    #[ignore = "writes the committed fuzz seeds, by hand"]
    fn write_regression_seeds() {
        use crate::checkpoint::tests::{state_dict_pkl, torch_zip};
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let put = |target: &str, name: &str, data: &[u8]| {
            std::fs::create_dir_all(root.join(target)).unwrap();
            std::fs::write(root.join(target).join(name), data).unwrap();
        };
        let mut rng = crate::testutil::Rng::new(11);
        let store: Vec<u8> = bytemuck::cast_slice(&rng.normals(8, 1.0)).to_vec();
        let pt = |specs: &[crate::checkpoint::tests::TensorSpec], key: &str| torch_zip(&state_dict_pkl(specs), &[(key, &store)]);
        put("checkpoint", "regress-expanded-huge.pt", &pt(&[("w", "0", 8, 0, &[1 << 40, 4], &[0, 1])], "0"));
        put("checkpoint", "regress-expanded-small.pt", &pt(&[("w", "0", 8, 2, &[3, 4], &[0, 1])], "0"));
        put("checkpoint", "regress-view-past-storage.pt", &pt(&[("w", "0", 8, 1, &[2, 4], &[4, 1])], "0"));
        put("checkpoint", "regress-count-overflow.pt", &pt(&[("w", "0", 8, 0, &[1 << 40, 1 << 40], &[0, 0])], "0"));
        let key = "k".repeat(64);
        let names: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
        let specs: Vec<_> = names.iter().map(|n| (n.as_str(), key.as_str(), 8, 0, &[8][..], &[1][..])).collect();
        put("checkpoint", "regress-shared-key.pt", &pt(&specs, &key));
        let mut many = pt(&[("w", "0", 8, 0, &[8], &[1])], "0");
        let at = many.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
        many[at + 8..at + 12].copy_from_slice(&[0xfe, 0xff, 0xfe, 0xff]);
        put("checkpoint", "regress-zip-entry-count.pt", &many);
        put("pickle", "regress-state-dict.pkl", &state_dict_pkl(&specs[..3]));
        put("pickle", "regress-long-key.pkl", &state_dict_pkl(&[("t", &"k".repeat(300), 4, 0, &[4], &[1])]));

        // Sub-byte dtypes, which safetensors 0.8 accepts.
        for (dt, name) in [(FileDtype::F4, "f4"), (FileDtype::F6_E2M3, "f6")] {
            let bytes: Vec<u8> = (0..24 * dt.bitsize() / 8).map(|_| rng.below(256) as u8).collect();
            let v = vec![("w", safetensors::tensor::TensorView::new(dt, vec![3, 8], &bytes).unwrap())];
            put("safetensors", &format!("regress-{name}.safetensors"), &safetensors::serialize(v, None).unwrap());
        }
        let half: Vec<half::f16> = rng.normals(6, 1.0).iter().map(|&x| half::f16::from_f32(x)).collect();
        let v = vec![("h", safetensors::tensor::TensorView::new(FileDtype::F16, vec![2, 3], bytemuck::cast_slice(&half)).unwrap())];
        put("safetensors", "f16.safetensors", &safetensors::serialize(v, None).unwrap());

        for (name, json) in [
            ("regress-groups-0.json", r#"{"norm_num_groups": 0}"#.to_string()),
            ("regress-heads-empty.json", r#"{"num_attention_heads": [], "attention_head_dim": []}"#.to_string()),
            ("regress-heads-short.json", r#"{"num_attention_heads": [8, 8], "_class_name": "UNet3DVSRModel"}"#.to_string()),
            ("regress-heads-0.json", r#"{"num_attention_heads": 0, "hidden_size": 64}"#.to_string()),
            ("regress-huge.json", r#"{"block_out_channels": [4611686018427387904, 512, 512, 1024], "layers_per_block": 4611686018427387904}"#.to_string()),
            ("regress-deep.json", format!("{{\"attention_head_dim\": {}{}}}", "[".repeat(300), "]".repeat(300))),
        ] {
            put("config", name, json.as_bytes());
        }

        let vocab = r#"{"!": 0, "a": 1, "b": 2, "a</w>": 3, "b</w>": 4, "ab</w>": 5, "<|startoftext|>": 6, "<|endoftext|>": 7}"#;
        let cfg = r#"{"model_max_length": 8, "pad_token": "!"}"#;
        put("tokenizer_files", "tiny", format!("{vocab}\0#version: 0.2\na b</w>\n\0{cfg}").as_bytes());
        put("tokenizer_files", "regress-empty-merges", format!("{vocab}\0#version: 0.2\n").as_bytes());
        // A CR inside the header line, which travelled with its field to the output line's end;
        // a header of the largest length read, which the ×4 sizes lengthen past it.
        put("y4m", "regress-cr-inside-header.y4m", &[b"YUV4MPEG2 W4 H4 Zq\r C444\nFRAME\n".as_slice(), &[128; 48]].concat());
        let long = b"YUV4MPEG2 W9 H9 C420jpeg X".as_slice();
        let pad = vec![b'a'; crate::video::y4m::MAX_HEADER_BYTES - long.len() - 1];
        put("y4m", "regress-longest-header.y4m", &[long, &pad, b"\nFRAME\n", &[128; 81 + 2 * 25]].concat());
        put("tokenizer_files", "regress-duplicate-ids", format!("{}\0#version: 0.2\na b</w>\n", vocab.replace("5}", "2}").replace("\"ab</w>\": 5", "\"ab</w>\": 2")).as_bytes());
    }
}
