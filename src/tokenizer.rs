//! CLIP's tokenizer (host side): byte-level BPE over the release's `tokenizer/` folder
//! (`vocab.json`, `merges.txt`, `tokenizer_config.json`, `special_tokens_map.json`), giving the
//! same ids as transformers' `CLIPTokenizer(text, padding="max_length", truncation=True)`.
//!
//! The pipeline is Hugging Face's `tokenizers` crate configured exactly as transformers 5
//! configures it for CLIP (NFC, whitespace runs to one space, lower-case; split on CLIP's word
//! regex; byte-level; BPE with the `</w>` end-of-word suffix; `[BOS] … [EOS]`; truncation and
//! padding to `model_max_length`), so the BPE, the added-token matching and the truncation are the
//! reference's own code, not a re-implementation.
//!
//! The official DiffVSR environment tokenizes with transformers 4.26's slow tokenizer, which
//! runs `ftfy.fix_text` first where ftfy is installed (it is, in DiffVSR_env.yml): curly quotes,
//! Latin ligatures, full-width forms, HTML entities and mis-decoded UTF-8 are repaired there and
//! not here, so prompts holding them tokenize differently (README, "Text prompts"); ASCII
//! prompts do not.
//!
//! Special tokens resolve from the config files the way transformers 5.24 resolves them, which
//! matters for the SD×4 release: its `tokenizer_config.json` says pad `<|endoftext|>` but its
//! `special_tokens_map.json` says `!`, and the map wins, so the pad id is 0 and a `!` in a prompt
//! is matched as that special token (id 0), not BPE'd as `!</w>` (id 256). See
//! [`SpecialTokens::from_dir`].

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

/// CLIP's word split (OpenAI's `SimpleTokenizer` pattern, as transformers' CLIP tokenizer uses it).
const CLIP_SPLIT: &str = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The length every prompt is padded or truncated to when the folder does not say
/// (`max_position_embeddings` of every CLIP text tower).
pub const CLIP_MAX_LENGTH: usize = 77;

/// One special token with the matching flags of a `tokenizers` `AddedToken`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecialToken {
    pub content: String,
    /// Matched on the normalized (lower-cased) text rather than the raw text.
    pub normalized: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    pub single_word: bool,
    pub special: bool,
}

impl SpecialToken {
    /// A plain string from a config file: a special token matched on the raw text
    /// (transformers' `AddedToken(token, special=True)`).
    pub fn plain(content: &str) -> SpecialToken {
        SpecialToken { content: content.into(), normalized: false, lstrip: false, rstrip: false, single_word: false, special: true }
    }

    /// An `AddedToken` serialised as a JSON object; `special` defaults to `default_special`, and
    /// `normalized` to `!special` (the `tokenizers` default).
    fn from_object(v: &Value, default_special: bool) -> Result<SpecialToken> {
        let content = v.get("content").and_then(Value::as_str).ok_or_else(|| anyhow!("added token {v} has no \"content\""))?;
        let flag = |k: &str, d: bool| v.get(k).and_then(Value::as_bool).unwrap_or(d);
        let special = flag("special", default_special);
        Ok(SpecialToken {
            content: content.into(),
            normalized: flag("normalized", !special),
            lstrip: flag("lstrip", false),
            rstrip: flag("rstrip", false),
            single_word: flag("single_word", false),
            special,
        })
    }

    fn added(&self) -> AddedToken {
        AddedToken::from(self.content.clone(), self.special)
            .normalized(self.normalized)
            .lstrip(self.lstrip)
            .rstrip(self.rstrip)
            .single_word(self.single_word)
    }
}

/// A config value for a named special token: a plain string, an `AddedToken`, or explicitly none.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Named {
    Str(String),
    Token(SpecialToken),
    Null,
}

/// transformers' named special-token attributes, in the order it adds them.
const NAMED: [&str; 7] = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// The special tokens and length a tokenizer folder's config files resolve to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: SpecialToken,
    pub eos: SpecialToken,
    pub unk: SpecialToken,
    /// `None` when the config sets `pad_token` to null: such a tokenizer cannot pad.
    pub pad: Option<SpecialToken>,
    /// Every token added to the vocabulary, in the order it is added: `added_tokens_decoder`
    /// entries by id, then the named tokens, then extra special tokens. A later token with the
    /// same content overrides an earlier one's flags (as in transformers).
    pub added: Vec<SpecialToken>,
    pub model_max_length: usize,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    crate::weights::check_regular_file(path, "tokenizer config")?;
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_str(&s).with_context(|| format!("parsing {}", path.display()))?))
}

impl SpecialTokens {
    /// CLIPTokenizer's own defaults, for a folder with no config files.
    pub fn clip_defaults() -> SpecialTokens {
        SpecialTokens::resolve(None, None).expect("defaults resolve")
    }

    /// Resolves `tokenizer_config.json` and `special_tokens_map.json` in `dir` (both optional)
    /// as transformers 5.24's `CLIPTokenizer.from_pretrained` does:
    /// 1. CLIPTokenizer's defaults (bos `<|startoftext|>`, eos/unk/pad `<|endoftext|>`);
    /// 2. the named tokens of `tokenizer_config.json` override them (strings, or AddedToken
    ///    objects with their flags, or null);
    /// 3. if `tokenizer_config.json` has an `added_tokens_decoder`, named strings take the flags
    ///    of the decoder entry with the same content, and `special_tokens_map.json` is **not**
    ///    read; otherwise `special_tokens_map.json` overrides the named tokens (objects become
    ///    special AddedTokens);
    /// 4. tokens are added: decoder entries by id, then bos, eos, unk, sep, pad, cls, mask, then
    ///    extra special tokens; a plain string is a special token matched on the raw text.
    pub fn from_dir(dir: &Path) -> Result<SpecialTokens> {
        let cfg = read_json(&dir.join("tokenizer_config.json"))?;
        let map = read_json(&dir.join("special_tokens_map.json"))?;
        SpecialTokens::resolve(cfg.as_ref(), map.as_ref()).with_context(|| format!("tokenizer config in {}", dir.display()))
    }

    fn resolve(cfg: Option<&Value>, map: Option<&Value>) -> Result<SpecialTokens> {
        let mut named: Vec<(&str, Named)> = vec![
            ("bos_token", Named::Str("<|startoftext|>".into())),
            ("eos_token", Named::Str("<|endoftext|>".into())),
            ("unk_token", Named::Str("<|endoftext|>".into())),
            ("pad_token", Named::Str("<|endoftext|>".into())),
        ];
        let set = |named: &mut Vec<(&'static str, Named)>, key: &'static str, v: Named| match named.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = v,
            None => named.push((key, v)),
        };
        let mut extra: Vec<SpecialToken> = Vec::new();
        let mut decoder: Vec<(u64, SpecialToken)> = Vec::new();
        let mut model_max_length = CLIP_MAX_LENGTH;
        if let Some(cfg) = cfg {
            for key in NAMED {
                match cfg.get(key) {
                    None => {}
                    Some(Value::Null) => set(&mut named, key, Named::Null),
                    Some(Value::String(s)) => set(&mut named, key, Named::Str(s.clone())),
                    Some(o @ Value::Object(_)) => set(&mut named, key, Named::Token(SpecialToken::from_object(o, false)?)),
                    Some(o) => bail!("tokenizer_config.json: {key} is {o}, not a string or an added token"),
                }
            }
            if let Some(n) = cfg.get("model_max_length").and_then(Value::as_f64) {
                // Configs without a limit carry a huge sentinel (1e30): CLIP's towers take 77.
                if (1.0..1e9).contains(&n) {
                    model_max_length = n as usize;
                }
            }
            for key in ["additional_special_tokens", "extra_special_tokens"] {
                if let Some(Value::Array(a)) = cfg.get(key) {
                    for t in a {
                        extra.push(special_from_value(t, key)?);
                    }
                }
            }
            if let Some(d) = cfg.get("added_tokens_decoder") {
                let d = d.as_object().ok_or_else(|| anyhow!("tokenizer_config.json: added_tokens_decoder is not an object"))?;
                for (id, t) in d {
                    let id: u64 = id.parse().with_context(|| format!("added_tokens_decoder id '{id}'"))?;
                    decoder.push((id, SpecialToken::from_object(t, false)?));
                }
                decoder.sort_by_key(|(id, _)| *id);
            }
        }
        if cfg.is_some_and(|c| c.get("added_tokens_decoder").is_some()) {
            for (_, v) in named.iter_mut() {
                if let Named::Str(s) = v {
                    if let Some((_, t)) = decoder.iter().rev().find(|(_, t)| &t.content == s) {
                        *v = Named::Token(t.clone());
                    }
                }
            }
        } else if let Some(map) = map {
            let map = map.as_object().ok_or_else(|| anyhow!("special_tokens_map.json is not an object"))?;
            for (key, v) in map {
                if let Some(&k) = NAMED.iter().find(|k| *k == key) {
                    match v {
                        Value::Null => set(&mut named, k, Named::Null),
                        Value::String(s) => set(&mut named, k, Named::Str(s.clone())),
                        Value::Object(_) => set(&mut named, k, Named::Token(SpecialToken::from_object(v, true).map(|mut t| {
                            t.special = true;
                            t
                        })?)),
                        o => bail!("special_tokens_map.json: {key} is {o}, not a string or an added token"),
                    }
                } else if key == "additional_special_tokens" || key == "extra_special_tokens" {
                    if let Value::Array(a) = v {
                        for t in a {
                            let t = special_from_value(t, key)?;
                            if !extra.contains(&t) {
                                extra.push(t);
                            }
                        }
                    }
                }
            }
        }
        let token = |key: &str| -> Option<SpecialToken> {
            named.iter().find(|(k, _)| *k == key).and_then(|(_, v)| match v {
                Named::Str(s) => Some(SpecialToken::plain(s)),
                Named::Token(t) => Some(t.clone()),
                Named::Null => None,
            })
        };
        let mut added: Vec<SpecialToken> = decoder.into_iter().map(|(_, t)| t).collect();
        for key in NAMED {
            added.extend(token(key));
        }
        added.extend(extra);
        let need = |key: &str| token(key).ok_or_else(|| anyhow!("{key} is null: a CLIP tokenizer needs it"));
        Ok(SpecialTokens { bos: need("bos_token")?, eos: need("eos_token")?, unk: need("unk_token")?, pad: token("pad_token"), added, model_max_length })
    }
}

fn special_from_value(v: &Value, key: &str) -> Result<SpecialToken> {
    match v {
        Value::String(s) => Ok(SpecialToken::plain(s)),
        Value::Object(_) => SpecialToken::from_object(v, true),
        o => bail!("{key}: {o} is not a string or an added token"),
    }
}

/// What the BPE loader would silently accept but changes every prompt's ids: a `merges.txt`
/// without merges (every word falls apart into bytes), and two tokens of `vocab.json` with one id
/// (one of them can never be produced, and decoding is ambiguous).
fn check_vocab_and_merges(vocab: &Path, merges: &Path) -> Result<()> {
    for p in [vocab, merges] {
        crate::weights::check_regular_file(p, "tokenizer file")?;
    }
    let merges_text = std::fs::read_to_string(merges).with_context(|| format!("reading {}", merges.display()))?;
    if !merges_text.lines().any(|l| !l.trim().is_empty() && !l.starts_with("#version")) {
        bail!("{} holds no merges: the tokenizer would split every word into single bytes; the file is truncated or not CLIP's: download it again", merges.display());
    }
    let text = std::fs::read_to_string(vocab).with_context(|| format!("reading {}", vocab.display()))?;
    let map: std::collections::BTreeMap<String, u32> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON object of token → id", vocab.display()))?;
    if map.is_empty() {
        bail!("{} is empty: the file is truncated or not CLIP's: download it again", vocab.display());
    }
    let mut by_id: std::collections::HashMap<u32, &str> = std::collections::HashMap::with_capacity(map.len());
    for (token, &id) in &map {
        if let Some(other) = by_id.insert(id, token) {
            bail!("{} gives id {id} to both {other:?} and {token:?}: the vocabulary is damaged; download it again", vocab.display());
        }
    }
    // Each merge's parts and result must be tokens (tokenizers 0.23 checks this only after
    // copying the merged token into a buffer sized for the longest token, and panics first).
    // Lines as tokenizers reads them; it reports malformed ones itself.
    for (n, line) in merges_text.lines().enumerate().filter(|(_, l)| !l.starts_with("#version")) {
        let mut parts = line.split(' ');
        if let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) {
            for t in [a, b, &format!("{a}{b}")] {
                if !map.contains_key(t) {
                    bail!(
                        "{} line {}: the merge {line:?} needs the token {t:?}, which {} lacks: the files do not belong together; download them again",
                        merges.display(),
                        n + 1,
                        vocab.display()
                    );
                }
            }
        }
    }
    Ok(())
}

/// CLIP's tokenizer, ready to turn prompts into fixed-length id sequences.
pub struct ClipTokenizer {
    tk: Tokenizer,
    /// The same tokenizer without truncation or padding: what a long prompt loses.
    whole: Tokenizer,
    pub specials: SpecialTokens,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
    /// Every prompt becomes exactly this many ids (`model_max_length`, 77 for CLIP).
    pub max_length: usize,
}

impl ClipTokenizer {
    /// Loads a tokenizer folder: `vocab.json`, `merges.txt` and (optional) config files.
    pub fn from_dir(dir: &Path) -> Result<ClipTokenizer> {
        ClipTokenizer::from_files(&dir.join("vocab.json"), &dir.join("merges.txt"), dir)
    }

    /// Vocabulary files and the folder holding the config files given separately.
    pub fn from_files(vocab: &Path, merges: &Path, config_dir: &Path) -> Result<ClipTokenizer> {
        ClipTokenizer::new(vocab, merges, SpecialTokens::from_dir(config_dir)?)
    }

    pub fn new(vocab: &Path, merges: &Path, specials: SpecialTokens) -> Result<ClipTokenizer> {
        for p in [vocab, merges] {
            if !p.is_file() {
                bail!("missing tokenizer file {} (a tokenizer folder holds vocab.json and merges.txt)", p.display());
            }
        }
        check_vocab_and_merges(vocab, merges)?;
        let path = |p: &Path| p.to_str().map(String::from).ok_or_else(|| anyhow!("non-UTF-8 path {}", p.display()));
        let bpe = BPE::from_file(&path(vocab)?, &path(merges)?)
            .unk_token(specials.unk.content.clone())
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".into())
            .fuse_unk(false)
            .build()
            .map_err(|e| anyhow!("loading {} and {}: {e}", vocab.display(), merges.display()))?;
        let mut tk = Tokenizer::new(bpe);
        let tkerr = |e: tokenizers::Error| anyhow!("building the CLIP tokenizer: {e}");
        let norm = NormSequence::new(vec![
            NFC.into(),
            Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ").map_err(tkerr)?.into(),
            Lowercase.into(),
        ]);
        tk.with_normalizer(Some(norm)).map_err(tkerr)?;
        let split = Split::new(SplitPattern::Regex(CLIP_SPLIT.into()), SplitDelimiterBehavior::Removed, true).map_err(tkerr)?;
        tk.with_pre_tokenizer(Some(PreSequence::new(vec![split.into(), ByteLevel::new(false, true, true).into()])));
        tk.with_decoder(Some(ByteLevelDecoder::default()));
        let added: Vec<AddedToken> = specials.added.iter().map(SpecialToken::added).collect();
        tk.add_special_tokens(added).map_err(tkerr)?;
        let whole = tk.clone();
        let id = |t: &SpecialToken| {
            tk.token_to_id(&t.content).ok_or_else(|| anyhow!("special token '{}' is not in the vocabulary", t.content))
        };
        let (bos_id, eos_id) = (id(&specials.bos)?, id(&specials.eos)?);
        let pad = specials.pad.clone().ok_or_else(|| anyhow!("the tokenizer config sets no pad token, so prompts cannot be padded"))?;
        let pad_id = id(&pad)?;
        tk.with_post_processor(Some(
            RobertaProcessing::new((specials.eos.content.clone(), eos_id), (specials.bos.content.clone(), bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        let max_length = specials.model_max_length;
        if max_length < 2 {
            bail!("model_max_length {max_length} leaves no room for the start and end tokens");
        }
        tk.with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(tkerr)?;
        tk.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad.content.clone(),
        }));
        Ok(ClipTokenizer { tk, whole, specials, bos_id, eos_id, pad_id, max_length })
    }

    /// `[BOS] tokens… [EOS] pad…`, exactly [`ClipTokenizer::max_length`] ids (longer prompts are
    /// cut to `max_length − 2` tokens before the end token).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let e = self.tk.encode(text, true).map_err(|e| anyhow!("tokenizing {text:?}: {e}"))?;
        let ids = e.get_ids().to_vec();
        debug_assert_eq!(ids.len(), self.max_length);
        Ok(ids)
    }

    /// The end of `text` that [`ClipTokenizer::encode`] cuts off (the tokens past
    /// `max_length − 2`, as text), or `None` when the whole prompt fits. transformers cuts the
    /// same tokens (and diffusers warns with them).
    pub fn cut_off(&self, text: &str) -> Result<Option<String>> {
        let e = self.whole.encode(text, false).map_err(|e| anyhow!("tokenizing {text:?}: {e}"))?;
        let room = self.max_length - 2;
        match e.get_ids().get(room..) {
            // As the user wrote it: from the first cut token's place in the text (else as the
            // tokens decode).
            Some(rest) if !rest.is_empty() => match e.get_offsets().get(room).and_then(|&(start, _)| text.get(start..)) {
                Some(tail) => Ok(Some(tail.trim().to_string())),
                None => Ok(Some(self.decode(rest)?)),
            },
            _ => Ok(None),
        }
    }

    /// The text of `ids` without special tokens (`</w>` become spaces), as transformers decodes.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let s = self.tk.decode(ids, true).map_err(|e| anyhow!("decoding: {e}"))?;
        Ok(s.replace("</w>", " ").trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// tests/data of the checkout that built the tests, else of the working directory (a test
    /// binary copied to another machine and run from the repository root there).
    fn data() -> PathBuf {
        let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        if built.is_dir() {
            built
        } else {
            PathBuf::from("tests/data")
        }
    }

    fn golden() -> Value {
        serde_json::from_str(&std::fs::read_to_string(data().join("clip_text/tokens.json")).unwrap()).unwrap()
    }

    fn tokenizer(variant: &str) -> ClipTokenizer {
        let tok = data().join("clip_tokenizer");
        if variant == "sdx4" {
            ClipTokenizer::from_dir(&tok).unwrap()
        } else {
            let cfg = data().join("clip_text/tokenizer_variants").join(variant);
            ClipTokenizer::from_files(&tok.join("vocab.json"), &tok.join("merges.txt"), &cfg).unwrap()
        }
    }

    /// A tiny tokenizer folder: the two CLIP specials, `!`, the bytes of "ab" and one merge.
    fn tiny(dir: &Path, vocab: &str, merges: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("vocab.json"), vocab).unwrap();
        std::fs::write(dir.join("merges.txt"), merges).unwrap();
    }
    const TINY_VOCAB: &str = r#"{"!": 0, "a": 1, "b": 2, "a</w>": 3, "b</w>": 4, "ab</w>": 5, "<|startoftext|>": 6, "<|endoftext|>": 7}"#;

    /// An empty merges.txt and duplicate vocabulary ids are errors naming the file, not a
    /// tokenizer that quietly gives other ids; a FIFO among the files is refused at once.
    #[test]
    fn damaged_vocabulary_files_are_refused() {
        let dir = crate::testutil::scratch_dir("tokenizer");
        let specials = SpecialTokens::clip_defaults;
        tiny(&dir, TINY_VOCAB, "#version: 0.2\na b</w>\n");
        let t = ClipTokenizer::from_files(&dir.join("vocab.json"), &dir.join("merges.txt"), &dir).unwrap();
        assert_eq!(&t.encode("ab").unwrap()[..3], &[6, 5, 7]);
        let err = |dir: &Path| format!("{:#}", ClipTokenizer::new(&dir.join("vocab.json"), &dir.join("merges.txt"), specials()).err().unwrap());
        for merges in ["", "#version: 0.2\n", "#version: 0.2\n\n  \n"] {
            tiny(&dir, TINY_VOCAB, merges);
            let e = err(&dir);
            assert!(e.contains("merges.txt") && e.contains("no merges"), "{merges:?}: {e}");
        }
        tiny(&dir, &TINY_VOCAB.replace("\"ab</w>\": 5", "\"ab</w>\": 2"), "#version: 0.2\na b</w>\n");
        let e = err(&dir);
        assert!(e.contains("vocab.json") && e.contains("id 2") && e.contains("\"ab</w>\"") && e.contains("\"b\""), "{e}");
        tiny(&dir, "{}", "#version: 0.2\na b</w>\n");
        assert!(err(&dir).contains("is empty"));
        // A merge whose result is no token (and longer than any token: tokenizers panicked;
        // found by the tokenizer_files fuzz target).
        tiny(&dir, &TINY_VOCAB.replace("\"ab</w>\": 5, ", ""), "#version: 0.2\na b</w>\n");
        let e = err(&dir);
        assert!(e.contains("merges.txt line 2") && e.contains("\"ab</w>\"") && e.contains("vocab.json"), "{e}");
        #[cfg(unix)]
        {
            tiny(&dir, TINY_VOCAB, "#version: 0.2\na b</w>\n");
            let fifo = dir.join("tokenizer_config.json");
            let _ = std::fs::remove_file(&fifo);
            assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
            let t0 = std::time::Instant::now();
            let e = format!("{:#}", ClipTokenizer::from_dir(&dir).err().unwrap());
            assert!(e.contains("tokenizer_config.json") && e.contains("not a regular file"), "{e}");
            assert!(t0.elapsed().as_secs() < 5);
        }
    }

    /// Every prompt of the golden set, in every config variant, gives transformers' ids exactly.
    #[test]
    fn ids_match_transformers_for_every_prompt_and_config() {
        let g = golden();
        let prompts: Vec<&str> = g["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let variants = g["variants"].as_object().unwrap();
        assert!(variants.len() >= 4);
        for (name, v) in variants {
            let t = tokenizer(name);
            assert_eq!(t.pad_id as u64, v["pad_id"].as_u64().unwrap(), "{name}: pad id");
            assert_eq!(t.bos_id as u64, v["bos_id"].as_u64().unwrap(), "{name}: bos id");
            assert_eq!(t.eos_id as u64, v["eos_id"].as_u64().unwrap(), "{name}: eos id");
            assert_eq!(t.max_length as u64, v["model_max_length"].as_u64().unwrap(), "{name}: length");
            for (p, want) in prompts.iter().zip(v["ids"].as_array().unwrap()) {
                let want: Vec<u32> = want.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
                let got = t.encode(p).unwrap();
                assert_eq!(got, want, "variant {name}, prompt {p:?}");
            }
        }
    }

    /// The SD×4 files: the special-tokens map's `!` wins over the config's `<|endoftext|>`.
    #[test]
    fn sdx4_pad_is_exclamation_mark_id_0() {
        let t = tokenizer("sdx4");
        assert_eq!((t.pad_id, t.bos_id, t.eos_id, t.max_length), (0, 49406, 49407, 77));
        assert_eq!(t.specials.pad.as_ref().unwrap().content, "!");
        let ids = t.encode("clear, high quality, high-resolution, 4K").unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], 49406);
        let end = ids.iter().position(|&i| i == 49407).unwrap();
        assert!(ids[end + 1..].iter().all(|&i| i == 0));
        assert_eq!(t.decode(&ids).unwrap(), "clear , high quality , high - resolution , 4 k");
        let e = tokenizer("eos_pad");
        assert_eq!(e.pad_id, 49407);
        // With "!" a special token it is matched before BPE; as a plain vocabulary entry it is "!</w>".
        assert_eq!(&t.encode("wow!").unwrap()[..3], &[49406, 2781, 0]);
        assert_eq!(&e.encode("wow!").unwrap()[..3], &[49406, 2781, 256]);
    }

    #[test]
    fn long_prompts_are_truncated_to_75_tokens_plus_specials() {
        let t = tokenizer("sdx4");
        let long = "a ".repeat(200);
        let ids = t.encode(&long).unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], 49406);
        assert_eq!(ids[76], 49407);
        assert!(ids[1..76].iter().all(|&i| i == 320), "{ids:?}");
        // What is cut off is named: nothing for 75 tokens, the rest beyond.
        assert_eq!(t.cut_off(&"a ".repeat(75)).unwrap(), None);
        assert_eq!(t.cut_off("clear, high quality, high-resolution, 4K").unwrap(), None);
        assert_eq!(t.cut_off(&format!("{}tail end", "a ".repeat(75))).unwrap().as_deref(), Some("tail end"));
        // The cut part as written (capitals and punctuation kept), not as the tokens decode.
        assert_eq!(t.cut_off(&format!("{}Tail, END!", "a ".repeat(75))).unwrap().as_deref(), Some("Tail, END!"));
    }

    #[test]
    fn config_resolution_rules() {
        let d = SpecialTokens::clip_defaults();
        assert_eq!(d.pad.as_ref().unwrap().content, "<|endoftext|>");
        assert_eq!(d.model_max_length, 77);
        let cfg: Value = serde_json::json!({"pad_token": null, "model_max_length": 1e30});
        let s = SpecialTokens::resolve(Some(&cfg), None).unwrap();
        assert!(s.pad.is_none());
        assert_eq!(s.model_max_length, 77);
        // The map is ignored when the config has an added_tokens_decoder.
        let cfg = serde_json::json!({"pad_token": "!", "added_tokens_decoder": {}});
        let map = serde_json::json!({"pad_token": "<|endoftext|>"});
        assert_eq!(SpecialTokens::resolve(Some(&cfg), Some(&map)).unwrap().pad.unwrap().content, "!");
        let cfg = serde_json::json!({"pad_token": "!"});
        assert_eq!(SpecialTokens::resolve(Some(&cfg), Some(&map)).unwrap().pad.unwrap().content, "<|endoftext|>");
        let e = ClipTokenizer::from_dir(Path::new("/nonexistent")).err().unwrap().to_string();
        assert!(e.contains("vocab.json"), "{e}");
    }
}
