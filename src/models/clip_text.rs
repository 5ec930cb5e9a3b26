//! The text encoder: transformers' `CLIPTextModel` (OpenCLIP ViT-H/14's text tower truncated to
//! the penultimate layer in the SD×4 release: 23 layers of width 1024, 16 heads of 64; spec §2.7).
//!
//! `x = token_embedding[ids] + position_embedding[0..L]`; per layer
//! `x += out_proj(causal_MHA(layer_norm1(x)))`, `x += fc2(GELU(fc1(layer_norm2(x))))`; then
//! `final_layer_norm`. The output is `last_hidden_state` `[B, L, D]` (token sequences,
//! channels-last), which the UNet's cross-attention reads as is.
//!
//! The token lookup and the position add run on the host: a prompt reads 77 rows of a
//! 49408 × 1024 table (202 MB in f32, more than one storage binding may hold on some adapters,
//! e.g. lavapipe's 128 MiB), so the table stays in host memory and only the 77 summed rows are
//! uploaded. Everything after that runs on the engine's kernels; q/k/v are one fused Linear whose
//! output the causal attention kernel reads in place.

use std::path::Path;

use anyhow::{bail, Result};

use super::Loader;
use crate::ops::attention::{attention_qkv, AttnOpts};
use crate::ops::elementwise::{unary, Unary};
use crate::ops::matmul::{linear, linear_add, LinearInput, LinearWeight};
use crate::ops::residual::Residual;
use crate::ops::norm::{layer_norm_w, NormWeight};
use crate::tokenizer::ClipTokenizer;
use crate::weights::WeightStore;
use crate::{DType, Gpu, Recorder, Tensor};

pub use crate::config::ClipTextConfig;

/// `CLIPAttention`: q/k/v/out projections with bias, causal, scale dh^-1/2.
pub struct ClipAttention {
    /// q_proj, k_proj and v_proj stacked into one `[3·D, D]` Linear (channels `[q | k | v]`):
    /// one GEMM instead of three, read in place by [`attention_qkv`].
    pub qkv: LinearWeight,
    pub out_proj: LinearWeight,
    pub heads: usize,
}

impl ClipAttention {
    pub fn load(l: &mut Loader, prefix: &str, dim: usize, heads: usize) -> Result<Self> {
        let qkv = l.stacked_linear(&["q_proj", "k_proj", "v_proj"].map(|p| format!("{prefix}.{p}")), &[dim, dim], true)?;
        Ok(ClipAttention { qkv, out_proj: l.linear(&format!("{prefix}.out_proj"), dim, dim, true)?, heads })
    }

    /// `res + attention(x)` for `x [B, L, D]` → `[B, L, D]` (the sum formed as `out_proj` stores).
    pub fn forward_add(&self, rec: &mut Recorder, x: impl Into<LinearInput>, res: &Tensor) -> Result<Tensor> {
        let qkv = linear(rec, x, &self.qkv)?;
        let dh = self.out_proj.in_features / self.heads;
        let o = attention_qkv(rec, &qkv, self.heads, AttnOpts::new(dh).causal())?;
        linear_add(rec, &o, &self.out_proj, Residual::Same(res))
    }
}

/// `CLIPMLP`: `fc2(GELU(fc1(x)))`, exact (erf) GELU.
pub struct ClipMlp {
    pub fc1: LinearWeight,
    pub fc2: LinearWeight,
}

impl ClipMlp {
    pub fn load(l: &mut Loader, prefix: &str, dim: usize, inner: usize) -> Result<Self> {
        Ok(ClipMlp { fc1: l.linear(&format!("{prefix}.fc1"), inner, dim, true)?, fc2: l.linear(&format!("{prefix}.fc2"), dim, inner, true)? })
    }

    /// `res + MLP(x)` (the sum formed as `fc2` stores).
    pub fn forward_add(&self, rec: &mut Recorder, x: impl Into<LinearInput>, res: &Tensor) -> Result<Tensor> {
        let h = linear(rec, x, &self.fc1)?;
        let h = unary(rec, Unary::Gelu, &h)?;
        linear_add(rec, &h, &self.fc2, Residual::Same(res))
    }
}

/// `CLIPEncoderLayer` (pre-LayerNorm).
pub struct ClipEncoderLayer {
    pub layer_norm1: NormWeight,
    pub self_attn: ClipAttention,
    pub layer_norm2: NormWeight,
    pub mlp: ClipMlp,
    pub eps: f32,
}

impl ClipEncoderLayer {
    pub fn load(l: &mut Loader, prefix: &str, c: &ClipTextConfig) -> Result<Self> {
        let d = c.hidden_size;
        Ok(ClipEncoderLayer {
            layer_norm1: l.norm(&format!("{prefix}.layer_norm1"), d)?,
            self_attn: ClipAttention::load(l, &format!("{prefix}.self_attn"), d, c.num_attention_heads)?,
            layer_norm2: l.norm(&format!("{prefix}.layer_norm2"), d)?,
            mlp: ClipMlp::load(l, &format!("{prefix}.mlp"), d, c.intermediate_size)?,
            eps: c.layer_norm_eps as f32,
        })
    }

    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        let h = LinearInput::layer_normed(x, &self.layer_norm1, self.eps);
        let x = self.self_attn.forward_add(rec, h, x)?;
        let h = LinearInput::layer_normed(&x, &self.layer_norm2, self.eps);
        self.mlp.forward_add(rec, h, &x)
    }
}

/// `CLIPTextModel`.
pub struct ClipTextModel {
    pub config: ClipTextConfig,
    pub dtype: DType,
    /// `embeddings.token_embedding.weight [V, D]`, on the host (see the module docs).
    pub token_embedding: Vec<f32>,
    /// `embeddings.position_embedding.weight [P, D]`, on the host.
    pub position_embedding: Vec<f32>,
    pub layers: Vec<ClipEncoderLayer>,
    pub final_layer_norm: NormWeight,
}

impl ClipTextModel {
    /// From a checkpoint. Tensor names may carry the `text_model.` prefix (files saved by
    /// transformers 4, as the SD×4 release) or not (transformers 5); the `position_ids` buffer
    /// older files carry is skipped. Call `l.store.finish()` afterwards to refuse extra tensors.
    pub fn load(l: &mut Loader, config: &ClipTextConfig) -> Result<Self> {
        config.validate()?;
        let c = config;
        let d = c.hidden_size;
        let p = if l.store.contains("text_model.embeddings.token_embedding.weight") { "text_model." } else { "" };
        l.store.skip_prefix(&format!("{p}embeddings.position_ids"));
        let token_embedding = l.raw(&format!("{p}embeddings.token_embedding.weight"), &[c.vocab_size, d])?;
        let position_embedding = l.raw(&format!("{p}embeddings.position_embedding.weight"), &[c.max_position_embeddings, d])?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| ClipEncoderLayer::load(l, &format!("{p}encoder.layers.{i}"), c))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = l.norm(&format!("{p}final_layer_norm"), d)?;
        Ok(ClipTextModel { config: c.clone(), dtype: l.dtype, token_embedding, position_embedding, layers, final_layer_norm })
    }

    /// Seeded random weights ([`WeightStore::synthetic`]): full-size runs without a checkpoint.
    pub fn random(gpu: &Gpu, config: &ClipTextConfig, dtype: DType, seed: u64) -> Result<Self> {
        ClipTextModel::load(&mut Loader::new(gpu, &mut WeightStore::synthetic(seed), dtype), config)
    }

    /// Token plus position embeddings of `ids` (`batch` sequences of equal length, row-major),
    /// uploaded as `[batch, L, D]`.
    pub fn embed(&self, gpu: &Gpu, ids: &[u32], batch: usize) -> Result<Tensor> {
        let c = &self.config;
        let d = c.hidden_size;
        if batch == 0 || ids.is_empty() || !ids.len().is_multiple_of(batch) {
            bail!("text encoder: {} ids do not split into {batch} sequences", ids.len());
        }
        let len = ids.len() / batch;
        if len > c.max_position_embeddings {
            bail!("text encoder: sequences of {len} tokens exceed max_position_embeddings {}", c.max_position_embeddings);
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            bail!("text encoder: token id {bad} is outside the vocabulary ({} entries): tokenizer and model do not match", c.vocab_size);
        }
        let mut x = Vec::with_capacity(ids.len() * d);
        for (n, &id) in ids.iter().enumerate() {
            let pos = n % len;
            let t = &self.token_embedding[id as usize * d..][..d];
            let p = &self.position_embedding[pos * d..][..d];
            x.extend(t.iter().zip(p).map(|(a, b)| a + b));
        }
        Tensor::from_f32(gpu, &x, &[batch, len, d], self.dtype)
    }

    /// `last_hidden_state [batch, L, D]` of `ids` (`batch` sequences of `L ≤ 77` tokens).
    pub fn forward(&self, rec: &mut Recorder, ids: &[u32], batch: usize) -> Result<Tensor> {
        let x = self.hidden_states(rec, ids, batch, self.layers.len())?;
        layer_norm_w(rec, &x, &self.final_layer_norm, self.config.layer_norm_eps as f32)
    }

    /// The residual stream after the first `layers` encoder layers, before the final LayerNorm
    /// (transformers' `hidden_states[layers]`).
    pub fn hidden_states(&self, rec: &mut Recorder, ids: &[u32], batch: usize, layers: usize) -> Result<Tensor> {
        if layers > self.layers.len() {
            bail!("text encoder has {} layers, {layers} asked for", self.layers.len());
        }
        let mut x = self.embed(rec.gpu(), ids, batch)?;
        for layer in &self.layers[..layers] {
            x = layer.forward(rec, &x)?;
        }
        Ok(x)
    }
}

/// The tokenizer and the text encoder of a release folder, turning prompts into the UNet's
/// `encoder_hidden_states`.
pub struct TextEncoder {
    pub tokenizer: ClipTokenizer,
    pub model: ClipTextModel,
}

pub use super::release::{resolve_pipeline_dir, text_encoder_weights};

impl TextEncoder {
    /// From a release folder (see [`resolve_pipeline_dir`]).
    pub fn load(gpu: &Gpu, dir: &Path, dtype: DType) -> Result<Self> {
        let dir = resolve_pipeline_dir(dir)?;
        TextEncoder::from_parts(gpu, &dir.join("text_encoder"), &dir.join("tokenizer"), dtype)
    }

    /// From a `text_encoder/` folder (config.json and weights) and a `tokenizer/` folder.
    pub fn from_parts(gpu: &Gpu, text_encoder: &Path, tokenizer: &Path, dtype: DType) -> Result<Self> {
        let tokenizer = ClipTokenizer::from_dir(tokenizer)?;
        let config = ClipTextConfig::from_file(&text_encoder.join("config.json"))?;
        let mut store = WeightStore::open(&text_encoder_weights(text_encoder)?)?;
        let model = ClipTextModel::load(&mut Loader::new(gpu, &mut store, dtype), &config)?;
        store.finish()?;
        TextEncoder::new(tokenizer, model)
    }

    pub fn new(tokenizer: ClipTokenizer, model: ClipTextModel) -> Result<Self> {
        if tokenizer.max_length > model.config.max_position_embeddings {
            bail!(
                "the tokenizer pads to {} tokens but the text encoder has {} positions",
                tokenizer.max_length,
                model.config.max_position_embeddings
            );
        }
        Ok(TextEncoder { tokenizer, model })
    }

    /// Token ids of `prompts`, each padded or cut to the tokenizer's length (77).
    pub fn tokenize(&self, prompts: &[&str]) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for p in prompts {
            if let Some(rest) = self.tokenizer.cut_off(p)? {
                let start: String = p.chars().take(24).collect();
                log::warn!("the prompt \"{start}…\" is longer than the text encoder's {} tokens: its end, {rest:?}, is ignored", self.tokenizer.max_length - 2);
            }
            ids.extend(self.tokenizer.encode(p)?);
        }
        Ok(ids)
    }

    /// `prompt_embeds [P, 77, D]` of `prompts` (in the model's dtype).
    pub fn encode(&self, rec: &mut Recorder, prompts: &[&str]) -> Result<Tensor> {
        let ids = self.tokenize(prompts)?;
        self.model.forward(rec, &ids, prompts.len())
    }
}

/// Writes `prompt_embeds [1, L, D]` (f32) with the prompt and its ids in the file's metadata.
pub fn save_prompt_embeds(path: &Path, embeds: &[f32], shape: &[usize], prompt: &str, ids: &[u32]) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let view = TensorView::new(Dtype::F32, shape.to_vec(), bytemuck::cast_slice(embeds))?;
    let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let meta = std::collections::HashMap::from([
        ("prompt".to_string(), prompt.to_string()),
        ("input_ids".to_string(), ids.join(",")),
    ]);
    crate::weights::write_safetensors(path, [("prompt_embeds", view)], Some(meta))
}

/// What [`encode_prompt_to_file`] wrote.
pub struct EncodedPrompt {
    /// The padded ids (77).
    pub ids: Vec<u32>,
    /// Ids through the prompt's last end token (padding excluded).
    pub used: usize,
    /// `[1, 77, D]`.
    pub shape: Vec<usize>,
}

/// The `encode-prompt` command: encodes `text` with the text encoder of the release folder
/// `weights` (see [`resolve_pipeline_dir`]) and writes `prompt_embeds [1, 77, D]` (f32) to `out`,
/// with the prompt and its ids in the file's metadata.
pub fn encode_prompt_to_file(gpu: &Gpu, weights: &Path, text: &str, out: &Path, dtype: DType) -> Result<EncodedPrompt> {
    let enc = TextEncoder::load(gpu, weights, dtype)?;
    let ids = enc.tokenize(&[text])?;
    let mut rec = gpu.recorder();
    let e = enc.model.forward(&mut rec, &ids, 1)?;
    rec.submit();
    let v = e.to_f32(gpu)?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        let fix = if dtype == DType::F16 { "encode with --dtype f32, or check the weights (fetch-weights --verify)" } else { "check the weights (fetch-weights --verify)" };
        bail!("the text encoder produced a non-finite value at {i}: the weights may be damaged, or overflow {}: {fix}", dtype.name());
    }
    save_prompt_embeds(out, &v, e.shape(), text, &ids)?;
    let used = used_tokens(&ids, enc.tokenizer.eos_id, enc.tokenizer.pad_id);
    Ok(EncodedPrompt { ids, used, shape: e.shape().to_vec() })
}

/// How many of a prompt's ids are its own (start and end tokens included), not padding: through
/// the last end token where padding is another token (a literal `<|endoftext|>` in the prompt
/// is an end token too), else through the first end token after the start.
fn used_tokens(ids: &[u32], eos: u32, pad: u32) -> usize {
    let last = if pad != eos { ids.iter().rposition(|&i| i == eos) } else { ids.iter().skip(1).position(|&i| i == eos).map(|p| p + 1) };
    last.map_or(ids.len(), |p| p + 1)
}

/// Benchmarks: one encoder layer of the SD×4 text encoder (23 such layers make the model) on the
/// CFG pair (prompt + negative prompt, 2 × 77 tokens), random weights. A layer rather than the
/// whole model because the bench harness times at most 64 dispatches per run (a layer is 10).
pub fn bench_cases(gpu: &Gpu, dtype: DType, quick: bool) -> Result<Vec<crate::ops::bench_case::BenchCase>> {
    let full = ClipTextConfig::default();
    let c = if quick {
        ClipTextConfig { hidden_size: 64, intermediate_size: 256, num_attention_heads: 4, ..full.clone() }
    } else {
        full.clone()
    };
    // One layer and a token table of one row: only the layer is timed.
    let one = ClipTextConfig { num_hidden_layers: 1, vocab_size: 1, ..c.clone() };
    let mut model = ClipTextModel::random(gpu, &one, dtype, 5)?;
    let layer = model.layers.remove(0);
    let x = crate::ops::bench_case::random_tensor(gpu, &[2, 77, c.hidden_size], dtype, 6)?;
    Ok(vec![crate::ops::bench_case::BenchCase {
        name: format!("clip text encoder layer (1 of {})", c.num_hidden_layers),
        shape: format!("2x77x{}, {} heads, ffn {}", c.hidden_size, c.num_attention_heads, c.intermediate_size),
        flops: one.flops(2, 77),
        // A floor: the layer's weights read once (attention's four h×h projections, the MLP's
        // two h×ffn) and its input and output; intermediates are not counted.
        bytes: (dtype.size() * (4 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * c.intermediate_size + 2 * 2 * 77 * c.hidden_size)) as f64,
        run: Box::new(move |r| layer.forward(r, &x).map(drop)),
    }])
}

/// CPU reference: the same forward on PyTorch-layout weights, in f64 where it accumulates.
pub mod cpu {
    use super::ClipTextConfig;
    use crate::ops::elementwise::cpu::gelu;
    use crate::ops::matmul::cpu::linear;
    use crate::ops::norm::cpu::layer_norm;

    /// A weight source: `w(name, shape)` returns a tensor by its name without prefix.
    pub type Weights<'a> = &'a mut dyn FnMut(&str, &[usize]) -> Vec<f32>;

    fn lin(w: Weights, x: &[f32], name: &str, rows: usize, out: usize, inp: usize) -> Vec<f32> {
        let wt = w(&format!("{name}.weight"), &[out, inp]);
        let b = w(&format!("{name}.bias"), &[out]);
        linear(x, &wt, Some(&b), rows, inp, out)
    }

    fn ln(w: Weights, x: &[f32], name: &str, d: usize, eps: f32) -> Vec<f32> {
        layer_norm(x, d, &w(&format!("{name}.weight"), &[d]), &w(&format!("{name}.bias"), &[d]), eps)
    }

    /// `last_hidden_state` (or, with `layers < num_hidden_layers`, `hidden_states[layers]`
    /// without the final norm) of `batch` sequences `ids`.
    pub fn clip_text(c: &ClipTextConfig, w: Weights, ids: &[u32], batch: usize, layers: usize) -> Vec<f32> {
        let (d, inner) = (c.hidden_size, c.intermediate_size);
        let len = ids.len() / batch;
        let rows = ids.len();
        let tok = w("embeddings.token_embedding.weight", &[c.vocab_size, d]);
        let pos = w("embeddings.position_embedding.weight", &[c.max_position_embeddings, d]);
        let mut x: Vec<f32> = Vec::with_capacity(rows * d);
        for (n, &id) in ids.iter().enumerate() {
            let p = n % len;
            x.extend((0..d).map(|j| tok[id as usize * d + j] + pos[p * d + j]));
        }
        let eps = c.layer_norm_eps as f32;
        for i in 0..layers {
            let p = format!("encoder.layers.{i}");
            let h = ln(w, &x, &format!("{p}.layer_norm1"), d, eps);
            let q = lin(w, &h, &format!("{p}.self_attn.q_proj"), rows, d, d);
            let k = lin(w, &h, &format!("{p}.self_attn.k_proj"), rows, d, d);
            let v = lin(w, &h, &format!("{p}.self_attn.v_proj"), rows, d, d);
            let o = causal_attention(&q, &k, &v, batch, len, c.num_attention_heads, c.head_dim());
            let a = lin(w, &o, &format!("{p}.self_attn.out_proj"), rows, d, d);
            x.iter_mut().zip(&a).for_each(|(x, a)| *x += a);
            let h = ln(w, &x, &format!("{p}.layer_norm2"), d, eps);
            let h: Vec<f32> = lin(w, &h, &format!("{p}.mlp.fc1"), rows, inner, d).into_iter().map(gelu).collect();
            let f = lin(w, &h, &format!("{p}.mlp.fc2"), rows, d, inner);
            x.iter_mut().zip(&f).for_each(|(x, f)| *x += f);
        }
        if layers == c.num_hidden_layers {
            x = ln(w, &x, "final_layer_norm", d, eps);
        }
        x
    }

    /// Causal multi-head attention on `[B, L, heads·dh]` (transformers' CLIP: q scaled by dh^-1/2,
    /// key `j > i` masked out).
    pub fn causal_attention(q: &[f32], k: &[f32], v: &[f32], batch: usize, len: usize, heads: usize, dh: usize) -> Vec<f32> {
        let c = heads * dh;
        let scale = 1.0 / (dh as f64).sqrt();
        let mut out = vec![0f32; batch * len * c];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..len {
                    let qi = &q[(b * len + i) * c + h * dh..][..dh];
                    let s: Vec<f64> = (0..=i)
                        .map(|j| {
                            let kj = &k[(b * len + j) * c + h * dh..][..dh];
                            qi.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|s| (s - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for t in 0..dh {
                        let acc: f64 = (0..=i).map(|j| e[j] * v[(b * len + j) * c + h * dh + t] as f64).sum();
                        out[(b * len + i) * c + h * dh + t] = (acc / z) as f32;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::collections::HashMap;

    /// The tokens a prompt uses: a literal end token inside it counts (SD×4 pads with `!`, id
    /// 0), a prompt of every slot uses them all, and where padding is the end token the first
    /// end token ends the prompt.
    #[test]
    fn used_tokens_count_to_the_prompts_last_end_token() {
        let (bos, eos) = (49406, 49407);
        assert_eq!(used_tokens(&[bos, 7, eos, 8, eos, 0, 0], eos, 0), 5);
        assert_eq!(used_tokens(&[bos, eos, 0, 0], eos, 0), 2);
        assert_eq!(used_tokens(&[bos, 7, 8, eos], eos, 0), 4);
        assert_eq!(used_tokens(&[bos, 7, eos, eos, eos], eos, eos), 3);
    }

    /// tests/data of the checkout that built the tests, else of the working directory (a test
    /// binary copied to another machine and run from the repository root there).
    fn data() -> std::path::PathBuf {
        let built = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        if built.is_dir() {
            built
        } else {
            std::path::PathBuf::from("tests/data")
        }
    }

    /// The golden file's inputs and outputs.
    fn golden_io() -> (Vec<u32>, usize, Vec<f32>, Vec<f32>) {
        let mut io = WeightStore::open(&data().join("clip_text/io.safetensors")).unwrap();
        let s = io.shape("input_ids").unwrap();
        let ids: Vec<u32> = io.take("input_ids", &s).unwrap().into_iter().map(|v| v as u32).collect();
        let d = io.shape("last_hidden_state").unwrap()[2];
        let out = io.take("last_hidden_state", &[s[0], s[1], d]).unwrap();
        let tap = io.take("tap.layer0", &[s[0], s[1], d]).unwrap();
        (ids, s[0], out, tap)
    }

    /// The issue's tolerances for the golden comparison: 1e-4 in f32, 1e-2 with f16 storage.
    fn golden_tol(dt: DType) -> f64 {
        match dt {
            DType::F16 => 1e-2,
            _ => 1e-4,
        }
    }

    /// The tiny CLIPTextModel (real vocabulary, 3 layers of width 32, 2 heads) on 12 tokenized
    /// prompts matches transformers' float64 output, in every storage dtype.
    #[test]
    fn tiny_model_matches_transformers() {
        let gpu = test_gpu();
        let dir = data().join("clip_text");
        let config = ClipTextConfig::from_file(&dir.join("config.json")).unwrap();
        let (ids, batch, want, tap) = golden_io();
        for dt in gpu.dtypes() {
            let mut store = WeightStore::open(&dir.join("model.safetensors")).unwrap();
            let model = ClipTextModel::load(&mut Loader::new(&gpu, &mut store, dt), &config).unwrap();
            store.finish().unwrap();
            let mut rec = gpu.recorder();
            let out = model.forward(&mut rec, &ids, batch).unwrap();
            let h1 = model.hidden_states(&mut rec, &ids, batch, 1).unwrap();
            rec.submit();
            assert_eq!(out.shape(), &[batch, 77, config.hidden_size]);
            assert_close(&format!("{dt:?} hidden state after layer 0"), &h1.to_f32(&gpu).unwrap(), &tap, golden_tol(dt));
            assert_close(&format!("{dt:?} last_hidden_state"), &out.to_f32(&gpu).unwrap(), &want, golden_tol(dt));
        }
    }

    /// Prompts → tokenizer → encoder, through the folder-level API, equal the golden outputs.
    #[test]
    fn prompts_encode_end_to_end() {
        let gpu = test_gpu();
        let enc = TextEncoder::from_parts(&gpu, &data().join("clip_text"), &data().join("clip_tokenizer"), DType::F32).unwrap();
        let g: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data().join("clip_text/tokens.json")).unwrap()).unwrap();
        let prompts: Vec<&str> = g["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let (ids, batch, want, _) = golden_io();
        assert_eq!(enc.tokenize(&prompts).unwrap(), ids);
        // Two at a time (the pipeline's CFG pair) and one alone give the same rows.
        let d = enc.model.config.hidden_size;
        for (start, n) in [(0usize, 2usize), (1, 1), (batch - 3, 3)] {
            let mut rec = gpu.recorder();
            let e = enc.encode(&mut rec, &prompts[start..start + n]).unwrap();
            rec.submit();
            assert_eq!(e.shape(), &[n, 77, d]);
            assert_close(&format!("prompts {start}..{}", start + n), &e.to_f32(&gpu).unwrap(), &want[start * 77 * d..(start + n) * 77 * d], 1e-4);
        }
    }

    fn random_weights(c: &ClipTextConfig, rng: &mut Rng) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
        let mut m = HashMap::new();
        let d = c.hidden_size;
        let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
            let n = shape.iter().product();
            let v = rng.normals(n, scale).into_iter().map(|x| x + offset).collect();
            m.insert(name, (shape, v));
        };
        put("embeddings.token_embedding.weight".into(), vec![c.vocab_size, d], 1.0, 0.0);
        put("embeddings.position_embedding.weight".into(), vec![c.max_position_embeddings, d], 0.5, 0.0);
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layers.{i}");
            for n in ["layer_norm1", "layer_norm2"] {
                put(format!("{p}.{n}.weight"), vec![d], 0.1, 1.0);
                put(format!("{p}.{n}.bias"), vec![d], 0.1, 0.0);
            }
            for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                put(format!("{p}.self_attn.{n}.weight"), vec![d, d], 1.0 / (d as f32).sqrt(), 0.0);
                put(format!("{p}.self_attn.{n}.bias"), vec![d], 0.1, 0.0);
            }
            put(format!("{p}.mlp.fc1.weight"), vec![c.intermediate_size, d], 1.0 / (d as f32).sqrt(), 0.0);
            put(format!("{p}.mlp.fc1.bias"), vec![c.intermediate_size], 0.1, 0.0);
            put(format!("{p}.mlp.fc2.weight"), vec![d, c.intermediate_size], 1.0 / (c.intermediate_size as f32).sqrt(), 0.0);
            put(format!("{p}.mlp.fc2.bias"), vec![d], 0.1, 0.0);
        }
        put("final_layer_norm.weight".into(), vec![d], 0.1, 1.0);
        put("final_layer_norm.bias".into(), vec![d], 0.1, 0.0);
        m
    }

    /// Random weights at an awkward config (3 heads of 16, width 48, FFN 72, 2 layers) and
    /// sequence lengths 1, 7, 33, 77, two sequences each, against the CPU reference. Weights go
    /// through a safetensors file without the `text_model.` prefix but with a `position_ids`
    /// buffer (transformers 5 and old-file naming).
    #[test]
    fn random_weights_match_cpu_reference() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let c = ClipTextConfig { vocab_size: 101, hidden_size: 48, intermediate_size: 72, num_hidden_layers: 2, num_attention_heads: 3, ..Default::default() };
        let w = random_weights(&c, &mut rng);
        let path = crate::testutil::scratch_dir("clip-text").join(format!("{seed}.safetensors"));
        let pos_ids: Vec<f32> = (0..77).map(|i| i as f32).collect();
        let mut list: Vec<(&str, &[usize], &[f32])> = w.iter().map(|(k, (s, v))| (k.as_str(), s.as_slice(), v.as_slice())).collect();
        list.push(("embeddings.position_ids", &[1, 77], &pos_ids));
        crate::weights::save_f32(&path, &list).unwrap();
        for dt in gpu.dtypes() {
            let mut store = WeightStore::open(&path).unwrap();
            let model = ClipTextModel::load(&mut Loader::new(&gpu, &mut store, dt), &c).unwrap();
            store.finish().unwrap();
            let mut get = |name: &str, shape: &[usize]| {
                let (s, v) = &w[name];
                assert_eq!(s, shape, "{name}");
                let v = v.clone();
                // Linear weights and biases are stored in f16; norm weights stay f32 and the
                // embeddings are summed on the host in f32.
                if dt == DType::F16 && !name.contains("norm") && !name.contains("embedding") {
                    round_f16(&v)
                } else {
                    v
                }
            };
            for len in [1usize, 7, 33, 77] {
                let batch = 2;
                let ids: Vec<u32> = (0..batch * len).map(|_| rng.below(c.vocab_size as u32)).collect();
                let mut rec = gpu.recorder();
                let out = model.forward(&mut rec, &ids, batch).unwrap();
                rec.submit();
                let mut want = cpu::clip_text(&c, &mut get, &ids, batch, c.num_hidden_layers);
                if dt == DType::F16 {
                    want = round_f16(&want);
                }
                assert_close(&format!("{dt:?} len {len} seed {seed}"), &out.to_f32(&gpu).unwrap(), &want, dt.tolerance(1e-4));
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    /// One layer at the real width (1024, 16 heads of 64, FFN 4096) on 77 tokens, f32, with
    /// synthetic weights, against the CPU reference: the head layout and the kernels' tiling at
    /// the full model's shapes.
    #[test]
    fn full_width_layer_matches_cpu_reference() {
        let gpu = test_gpu();
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        let c = ClipTextConfig { vocab_size: 64, num_hidden_layers: 1, ..Default::default() };
        let model = ClipTextModel::random(&gpu, &c, DType::F32, seed).unwrap();
        let ids: Vec<u32> = (0..77).map(|_| rng.below(c.vocab_size as u32)).collect();
        let mut rec = gpu.recorder();
        let out = model.forward(&mut rec, &ids, 1).unwrap();
        rec.submit();
        let mut st = WeightStore::synthetic(seed);
        let want = cpu::clip_text(&c, &mut |n: &str, s: &[usize]| st.take(n, s).unwrap(), &ids, 1, 1);
        assert_close(&format!("seed {seed}"), &out.to_f32(&gpu).unwrap(), &want, 1e-4);
    }

    /// `encode-prompt` on a release-shaped folder (`top/upscaler4x/{text_encoder,tokenizer}`)
    /// writes the golden row with its prompt and ids in the metadata.
    #[test]
    fn encode_prompt_writes_the_embedding_file() {
        let gpu = test_gpu();
        let top = crate::testutil::scratch_dir("encode-prompt");
        let up = top.join("upscaler4x");
        for (sub, src, files) in [
            ("text_encoder", "clip_text", &["config.json", "model.safetensors"][..]),
            ("tokenizer", "clip_tokenizer", &["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"][..]),
        ] {
            std::fs::create_dir_all(up.join(sub)).unwrap();
            for f in files {
                std::fs::copy(data().join(src).join(f), up.join(sub).join(f)).unwrap();
            }
        }
        let out = top.join("emb.safetensors");
        let prompt = "clear, high quality, high-resolution, 4K";
        let r = encode_prompt_to_file(&gpu, &top, prompt, &out, DType::F32).unwrap();
        let ids = r.ids;
        assert_eq!(r.shape, vec![1, 77, 32]);
        assert_eq!(r.used, 13);
        let (gold_ids, _, want, _) = golden_io();
        assert_eq!(ids, gold_ids[77..154]);
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("prompt_embeds").unwrap();
        assert_eq!(t.shape(), &[1, 77, 32]);
        let got: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_close("prompt_embeds", &got, &want[77 * 32..154 * 32], 1e-4);
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["prompt"], prompt);
        let _ = std::fs::remove_dir_all(&top);
    }

    /// `forward --model text-encoder` on the golden files (weights, config, input_ids).
    #[test]
    fn forward_command_path_matches_golden() {
        use crate::models::registry::{load_inputs, load_model, ModelKind};
        let gpu = test_gpu();
        let dir = data().join("clip_text");
        let model = load_model(&gpu, ModelKind::TextEncoder, Some(&dir.join("config.json")), &dir, DType::F32).unwrap();
        let inputs = load_inputs(&gpu, ModelKind::TextEncoder, &dir.join("io.safetensors"), DType::F32).unwrap();
        let mut rec = Recorder::capture(&gpu);
        let out = model.forward(&mut rec, &inputs).unwrap();
        let graph = rec.into_graph().unwrap();
        graph.run(&gpu).unwrap();
        let (_, batch, want, _) = golden_io();
        assert_eq!(out.shape(), &[batch, 77, 32]);
        assert_close("forward text-encoder", &out.to_f32(&gpu).unwrap(), &want, 1e-4);
    }

    #[test]
    fn config_and_folder_errors_are_clear() {
        let c: ClipTextConfig = serde_json::from_str(r#"{"hidden_act": "quick_gelu"}"#).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("quick_gelu"));
        // Zero divisors are errors naming the setting, never a panic.
        for (j, want) in [
            (r#"{"num_attention_heads": 0}"#, "0 heads"),
            (r#"{"hidden_size": 0}"#, "hidden_size 0"),
            (r#"{"hidden_size": 1000, "num_attention_heads": 16}"#, "16 heads"),
            (r#"{"num_hidden_layers": 0}"#, "positive"),
            (r#"{"vocab_size": 0}"#, "positive"),
            (r#"{"vocab_size": 4611686018427387904}"#, "exceeds"),
        ] {
            let e = serde_json::from_str::<ClipTextConfig>(j).unwrap().validate().unwrap_err().to_string();
            assert!(e.contains(want), "{j}: {e}");
        }
        let f = ClipTextConfig::default().flops(1, 77);
        assert!((44e9..46e9).contains(&f), "{f}"); // spec §6.2: 45 GFLOP per prompt
        let e = resolve_pipeline_dir(&data()).unwrap_err().to_string();
        assert!(e.contains("upscaler4x"), "{e}");
        let e = text_encoder_weights(&data().join("clip_tokenizer")).unwrap_err().to_string();
        assert!(e.contains("no weights"), "{e}");
        assert!(text_encoder_weights(&data().join("clip_text")).unwrap().ends_with("model.safetensors"));
    }

    /// The SD×4 config at full size with random weights runs one prompt, in f32 as `upscale`
    /// runs it. On request only (`cargo test --lib full_size_random_weights -- --ignored`; about
    /// 90 s on a software adapter): one layer at full width is checked against the CPU by
    /// `full_width_layer_matches_cpu_reference`, the layer stack against transformers by the tiny
    /// goldens, and 23 identical layers add nothing to either.
    #[test]
    #[ignore = "full size, ~90 s on lavapipe; the GPU scripts run the full-size encoder through forward"]
    fn full_size_random_weights_run_one_prompt() {
        let gpu = test_gpu();
        {
            let dt = DType::F32;
            let t = std::time::Instant::now();
            let model = ClipTextModel::random(&gpu, &ClipTextConfig::default(), dt, 1).unwrap();
            let load = t.elapsed();
            let enc = TextEncoder::new(ClipTokenizer::from_dir(&data().join("clip_tokenizer")).unwrap(), model).unwrap();
            let t = std::time::Instant::now();
            let mut rec = gpu.recorder();
            let e = enc.encode(&mut rec, &["clear, high quality, high-resolution, 4K"]).unwrap();
            rec.submit();
            let v = e.to_f32(&gpu).unwrap();
            eprintln!("{dt:?}: random weights {:.1} s, one prompt {:.1} s", load.as_secs_f64(), t.elapsed().as_secs_f64());
            assert_eq!(e.shape(), &[1, 77, 1024]);
            assert!(v.iter().all(|x| x.is_finite()));
        }
    }
}
