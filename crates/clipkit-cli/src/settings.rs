//! Validated settings built from the flags: what the library is asked to do, once the
//! flags have been checked against each other and against the files they name.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clipkit_core::device::{CpuKernels, Precision};
use clipkit_core::image::DecodeOptions;
use clipkit_core::{Clip, Embedder, LoadOptions};

use crate::cli::{CpuKernelsArg, FilterArgs, LabelArgs, ModelArgs, PrecisionArg, ServeArgs};

pub fn load_model(args: &ModelArgs) -> Result<Clip> {
    let options = LoadOptions {
        preprocess: args.preprocess,
        decode: DecodeOptions {
            max_pixels: args.max_pixels,
            apply_exif_orientation: !args.ignore_exif,
            draft_shortest_edge: None,
        },
        jpeg_draft: args.jpeg_draft,
        pack_cache: clipkit_core::pack_cache::default_dir(),
        device: clipkit_core::device::device_from_name(&args.device)?,
        batch_size: args.batch_size,
        precision: match args.precision {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::F16 => Precision::F16,
            PrecisionArg::Int8 => Precision::Int8,
        },
        cpu_kernels: match args.cpu_kernels {
            CpuKernelsArg::Packed => CpuKernels::Packed,
            CpuKernelsArg::Candle => CpuKernels::Candle,
        },
    };
    Clip::load(&args.model, &options).with_context(|| format!("cannot load model `{}`", args.model))
}

/// Labels from `--label` and `--labels FILE`, in that order; templates as given.
pub struct Labels {
    pub labels: Vec<String>,
    pub templates: Vec<String>,
}

impl Labels {
    pub fn from_args(args: &LabelArgs) -> Result<Self> {
        let mut labels = args.labels.clone();
        if let Some(file) = &args.labels_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("{}: cannot read the labels file", file.display()))?;
            labels.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        if labels.is_empty() {
            bail!(clipkit_core::ClipError::EmptyLabels);
        }
        if let Some(empty) = labels.iter().position(|l| l.trim().is_empty()) {
            bail!("label #{} is empty", empty + 1);
        }
        for t in &args.templates {
            clipkit_core::scores::apply_template(t, "x")?;
        }
        Ok(Self {
            labels,
            templates: args.templates.clone(),
        })
    }

    /// Label embeddings (prompt-ensembled when templates are given), warning about prompts
    /// that the tokenizer truncates.
    pub fn embed(&self, clip: &Clip) -> Result<Vec<Vec<f32>>> {
        let prompts: Vec<String> = if self.templates.is_empty() {
            self.labels.clone()
        } else {
            self.labels
                .iter()
                .flat_map(|l| {
                    self.templates
                        .iter()
                        .map(move |t| t.replace("{}", l).replace("{c}", l))
                })
                .collect()
        };
        warn_truncated(clip, prompts.iter().map(String::as_str))?;
        Ok(clip.label_embeddings(&self.labels, &self.templates)?)
    }
}

pub fn warn_truncated<'a>(clip: &Clip, texts: impl Iterator<Item = &'a str>) -> Result<()> {
    let context = clip.tokenizer().context_length();
    for text in texts {
        let n = clip.tokenizer().untruncated_len(text)?;
        if n + 2 > context {
            eprintln!(
                "warning: text {:?} has {} tokens; CLIP reads the first {} of them",
                short(text),
                n,
                context - 2
            );
        }
    }
    Ok(())
}

fn short(text: &str) -> String {
    let mut s: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        s.push('…');
    }
    s
}

/// Image files from the arguments: files as given, directories searched recursively for
/// files with an image extension (sorted, so output order is stable).
pub fn expand_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input)
            .with_context(|| format!("{}: cannot read", input.display()))?;
        if meta.is_dir() {
            let found = clipkit_core::image::files::find_images(input)
                .with_context(|| format!("{}: cannot list", input.display()))?;
            if found.is_empty() {
                eprintln!("warning: {}: no image files found", input.display());
            }
            out.extend(found);
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

/// `clipkit serve`'s flags, checked, as the server library's configuration. The model name
/// defaults to `model_name`, the loaded model's.
pub fn server_config(args: &ServeArgs, model_name: &str) -> Result<clipkit_server::ServerConfig> {
    use std::time::Duration;
    // The flag parser has already refused negative and non-finite values.
    let seconds = Duration::from_secs_f64;
    let defaults = clipkit_server::Limits::default();
    let config = clipkit_server::ServerConfig {
        served_model_name: args
            .served_model_name
            .clone()
            .unwrap_or_else(|| model_name.to_owned()),
        batch: clipkit_server::BatchConfig {
            max_batch: args.max_batch.unwrap_or(args.model.batch_size),
            max_wait: seconds(args.max_wait_ms / 1e3),
            queue_capacity: args.queue_capacity,
        },
        limits: clipkit_server::Limits {
            body_bytes: (args.max_body_mib * 1024.0 * 1024.0) as usize,
            max_pixels: args.max_image_pixels.min(args.model.max_pixels),
            max_inputs: args.max_inputs,
            request_timeout: seconds(args.timeout),
            max_concurrent_requests: args.max_concurrent_requests,
            decode_concurrency: args.decode_threads.unwrap_or(defaults.decode_concurrency),
        },
    };
    if config.batch.max_batch > args.model.batch_size {
        bail!(
            "--max-batch ({}) cannot exceed --batch-size ({}), the model's forward-pass size",
            config.batch.max_batch,
            args.model.batch_size
        );
    }
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// The filter flags as the library's [`clipkit_index::Filter`]: folders made absolute and
/// symlink-free (the form the store keeps paths in), bounds checked against each other.
pub fn filter(args: &FilterArgs) -> Result<clipkit_index::Filter> {
    let folders = args
        .folders
        .iter()
        .map(|f| {
            let canonical = std::fs::canonicalize(f)
                .with_context(|| format!("--in {}: no such folder", f.display()))?;
            if !canonical.is_dir() {
                bail!("--in {}: not a folder", f.display());
            }
            Ok(canonical)
        })
        .collect::<Result<Vec<_>>>()?;
    let filter = clipkit_index::Filter {
        after: args.after,
        before: args.before,
        folders,
        near: args.near,
        camera: args.camera.clone(),
        file_types: args.file_types.clone(),
        min_size: args.min_size,
        max_size: args.max_size,
    };
    if let Err((field, problem)) = clipkit_index::filter_text::check(&filter) {
        bail!("--{}: {problem}", field.replace('_', "-"));
    }
    Ok(filter)
}
