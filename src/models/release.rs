//! What the code knows about the DiffVSR release's folder layout (spec §4): the two
//! checkpoints, the SD×4 pipeline folder `upscaler4x/` and its components, their safetensors
//! conversions, and the config files that override the built-in configs. Used by
//! `fetch-weights` (what to download and convert), `forward`, `encode-prompt` and the pipeline.
//! No network and no GPU here; where the fetched cache is, is `fetch.rs`'s business.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The DiffVSR video UNet checkpoint; its state dict is under `'ema'`.
pub const UNET_CHECKPOINT: &str = "DiffVSR_UNet.pt";
pub const UNET_CHECKPOINT_KEY: &str = "ema";
/// The TE-3DVAE checkpoint (a plain state dict).
pub const VAE_CHECKPOINT: &str = "TE-3DVAE.pt";
/// The SD×4 upscaler's diffusers folder: `text_encoder/`, `tokenizer/`, `scheduler/`,
/// `low_res_scheduler/` (and `unet/`, `vae/`, which DiffVSR does not use).
pub const PIPELINE_DIR: &str = "upscaler4x";
/// Config files beside the checkpoints that replace the built-in released configs (how tests
/// and users run other model sizes).
pub const UNET_CONFIG_OVERRIDE: &str = "unet_3d_config.json";
pub const VAE_CONFIG_OVERRIDE: &str = "vae_config.json";

/// What `fetch-weights` downloads by default (huggingface_hub `allow_patterns`).
pub const DEFAULT_INCLUDE: &[&str] = &[UNET_CHECKPOINT, VAE_CHECKPOINT, "upscaler4x/*"];
/// What a weights folder must hold to count as a fetched release.
pub const REQUIRED: &[&str] = &[UNET_CHECKPOINT, VAE_CHECKPOINT, PIPELINE_DIR];
/// The checkpoints converted to safetensors after a fetch, with the entry holding the state dict
/// (DiffVSR's loader reads `torch.load("DiffVSR_UNet.pt")['ema']`).
pub const CONVERT: &[(&str, Option<&str>)] = &[(UNET_CHECKPOINT, Some(UNET_CHECKPOINT_KEY)), (VAE_CHECKPOINT, None)];

/// The best file to load for checkpoint `file` (e.g. `DiffVSR_UNet.pt`) of a weights folder:
/// its safetensors conversion when there is one (beside it, or in `converted/<commit>` when the
/// folder is a hub-cache snapshot), else the file itself.
pub fn checkpoint_path(weights_dir: &Path, file: &str) -> PathBuf {
    let stem = Path::new(file).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let st = format!("{stem}.safetensors");
    let beside = weights_dir.join(&st);
    if beside.is_file() {
        return beside;
    }
    if let (Some(commit), Some(snapshots)) = (weights_dir.file_name(), weights_dir.parent()) {
        if snapshots.file_name().is_some_and(|n| n == "snapshots") {
            if let Some(repo) = snapshots.parent() {
                let conv = crate::fetch::converted_dir(repo, commit).join(&st);
                if conv.is_file() {
                    return conv;
                }
            }
        }
    }
    weights_dir.join(file)
}

/// Where a weights folder holds a safetensors copy beside checkpoint `file` that is older than
/// the checkpoint (the checkpoint replaced after a `convert`), what to say: the copy is what
/// loads.
pub fn stale_copy(weights_dir: &Path, file: &str) -> Option<String> {
    let pt = weights_dir.join(file);
    let copy = checkpoint_path(weights_dir, file);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if copy.parent() != Some(weights_dir) || copy == pt || modified(&pt)? <= modified(&copy)? {
        return None;
    }
    Some(format!(
        "{} is older than {} beside it, and is what loads: convert the checkpoint again (diffvsr-wgpu convert {} {}) or delete the copy",
        copy.display(),
        pt.display(),
        pt.display(),
        copy.display()
    ))
}

/// The folder holding `text_encoder/` and `tokenizer/`: `dir` itself, or `dir/upscaler4x`
/// (DiffVSR's `pretrained_models/` layout).
pub fn resolve_pipeline_dir(dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        bail!(
            "{}: {}; give the SD x4 upscaler folder (DiffVSR's upscaler4x/) or the release's top folder, or run 'diffvsr-wgpu fetch-weights' and leave --weights out",
            dir.display(),
            if dir.exists() { "a file, not a folder" } else { "no such folder" }
        );
    }
    for cand in [dir.to_path_buf(), dir.join(PIPELINE_DIR)] {
        if cand.join("text_encoder").is_dir() && cand.join("tokenizer").is_dir() {
            return Ok(cand);
        }
    }
    bail!(
        "{} holds neither text_encoder/ and tokenizer/ nor upscaler4x/ with them: give the SD x4 upscaler folder (DiffVSR's upscaler4x/) or the release's top folder",
        dir.display()
    )
}

/// The one weights file of a `text_encoder/` folder: a release may ship f32 and f16 copies, and
/// safetensors beside PyTorch pickles. Preference: `model.safetensors`, `model.fp16.safetensors`,
/// a lone `.safetensors`, `pytorch_model.bin`, `pytorch_model.fp16.bin`, a lone `.bin`/`.pt`.
pub fn text_encoder_weights(dir: &Path) -> Result<PathBuf> {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    let with_ext = |exts: &[&str]| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = files.iter().filter(|p| p.extension().is_some_and(|e| exts.iter().any(|x| e == *x))).cloned().collect();
        v.sort();
        v
    };
    for (preferred, exts) in [
        (&["model.safetensors", "model.fp16.safetensors"][..], &["safetensors"][..]),
        (&["pytorch_model.bin", "pytorch_model.fp16.bin"][..], &["bin", "pt", "pth"][..]),
    ] {
        if let Some(p) = preferred.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
            return Ok(p);
        }
        let mut v = with_ext(exts);
        match v.len() {
            0 => continue,
            1 => return Ok(v.remove(0)),
            _ => bail!("several weights files in {} ({}): keep one", dir.display(), v.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")),
        }
    }
    bail!("no weights (.safetensors, .bin, .pt) in {}", dir.display())
}

/// A diffusers component folder of `upscaler4x/` (`unet`, `vae`): its weights file and its
/// config. A folder may hold both a .safetensors and a .bin copy, or an fp16 variant, which
/// must not be loaded together: the first found of the usual names wins.
pub fn component(release_dir: &Path, name: &str) -> Result<(PathBuf, Option<PathBuf>)> {
    let d = release_dir.join(PIPELINE_DIR).join(name);
    for f in ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.safetensors"] {
        if d.join(f).is_file() {
            let cfg = d.join("config.json");
            return Ok((d.join(f), cfg.is_file().then_some(cfg)));
        }
    }
    bail!("no weights file in {}: run 'diffvsr-wgpu fetch-weights --verify' (or pass --weights)", d.display())
}

/// The DiffVSR checkpoints of a release folder, with their config overrides when present:
/// (weights, config).
pub fn video_unet(release_dir: &Path) -> (PathBuf, Option<PathBuf>) {
    let cfg = release_dir.join(UNET_CONFIG_OVERRIDE);
    (checkpoint_path(release_dir, UNET_CHECKPOINT), cfg.is_file().then_some(cfg))
}

pub fn video_vae(release_dir: &Path) -> (PathBuf, Option<PathBuf>) {
    let cfg = release_dir.join(VAE_CONFIG_OVERRIDE);
    (checkpoint_path(release_dir, VAE_CHECKPOINT), cfg.is_file().then_some(cfg))
}

/// What the upscale job needs of a release folder and does not find there, as the user should
/// look for it: the two checkpoints (or their safetensors conversions), and, unless both prompts
/// come as embeddings (`text_encoder` false), the text encoder and tokenizer folders.
pub fn missing_for_upscale(release_dir: &Path, text_encoder: bool) -> Vec<String> {
    let mut missing = Vec::new();
    for (file, path) in [(UNET_CHECKPOINT, video_unet(release_dir).0), (VAE_CHECKPOINT, video_vae(release_dir).0)] {
        if !path.is_file() {
            missing.push(file.to_string());
        }
    }
    if text_encoder && resolve_pipeline_dir(release_dir).is_err() {
        // Name what is missing of the two (both where neither layout holds either).
        let absent: Vec<String> = ["text_encoder", "tokenizer"]
            .iter()
            .filter(|d| !release_dir.join(d).is_dir() && !release_dir.join(PIPELINE_DIR).join(d).is_dir())
            .map(|d| format!("{PIPELINE_DIR}/{d}"))
            .collect();
        missing.push(if absent.is_empty() { format!("{PIPELINE_DIR}/text_encoder and {PIPELINE_DIR}/tokenizer in one folder") } else { absent.join(" and ") });
    }
    missing
}

/// The text encoder folder (`upscaler4x/text_encoder`) and its config.
pub fn text_encoder(release_dir: &Path) -> (PathBuf, Option<PathBuf>) {
    let te = release_dir.join(PIPELINE_DIR).join("text_encoder");
    let cfg = te.join("config.json");
    (te, cfg.is_file().then_some(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_prefer_their_conversion_and_overrides_are_found() {
        let dir = crate::testutil::scratch_dir("release");
        assert_eq!(video_unet(&dir), (dir.join(UNET_CHECKPOINT), None));
        std::fs::write(dir.join("DiffVSR_UNet.safetensors"), b"x").unwrap();
        std::fs::write(dir.join(UNET_CONFIG_OVERRIDE), b"{}").unwrap();
        assert_eq!(video_unet(&dir), (dir.join("DiffVSR_UNet.safetensors"), Some(dir.join(UNET_CONFIG_OVERRIDE))));
        assert_eq!(video_vae(&dir).0, dir.join(VAE_CHECKPOINT));
        assert!(component(&dir, "unet").unwrap_err().to_string().contains("fetch-weights"));
        // A checkpoint newer than its copy beside it (replaced after a convert) is said to be
        // shadowed by the copy; an older one is not, nor a checkpoint without a copy.
        let (pt, copy) = (dir.join(UNET_CHECKPOINT), dir.join("DiffVSR_UNet.safetensors"));
        std::fs::write(&pt, b"y").unwrap();
        let at = |p: &Path, secs: u64| std::fs::File::options().write(true).open(p).unwrap().set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).unwrap();
        at(&copy, 1_000_000);
        at(&pt, 2_000_000);
        let note = stale_copy(&dir, UNET_CHECKPOINT).unwrap();
        assert!(note.contains("DiffVSR_UNet.safetensors is older than") && note.contains("diffvsr-wgpu convert"), "{note}");
        at(&pt, 500_000);
        assert_eq!(stale_copy(&dir, UNET_CHECKPOINT), None);
        std::fs::write(dir.join(VAE_CHECKPOINT), b"z").unwrap();
        assert_eq!(stale_copy(&dir, VAE_CHECKPOINT), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What a release lacks is named as it is: the one folder missing of the text encoder's two,
    /// or a folder that does not exist at all.
    #[test]
    fn missing_parts_are_named_one_by_one() {
        let dir = crate::testutil::scratch_dir("release-missing");
        std::fs::create_dir_all(dir.join("upscaler4x/text_encoder")).unwrap();
        std::fs::write(dir.join(UNET_CHECKPOINT), b"x").unwrap();
        assert_eq!(missing_for_upscale(&dir, true), vec![VAE_CHECKPOINT.to_string(), "upscaler4x/tokenizer".to_string()]);
        assert_eq!(missing_for_upscale(&dir, false), vec![VAE_CHECKPOINT.to_string()]);
        assert!(resolve_pipeline_dir(&dir.join("nowhere")).unwrap_err().to_string().contains("no such folder"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
