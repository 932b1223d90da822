//! [`Clip`]: a loaded checkpoint with its tokenizer and preprocessor, embedding batches of
//! images and texts into the shared, L2-normalised space.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use rayon::prelude::*;

use crate::config::{ClipConfig, EosRule};
use crate::device::{matmul_path, CpuKernels, Precision};
use crate::error::{ClipError, Result};
use crate::hub::{self, ResolvedModel};
use crate::image::{DecodeOptions, PreprocessMode, Preprocessor, PreprocessorConfig};
use crate::model::layers::l2_normalize;
use crate::model::ClipModel;
use crate::scores;
use crate::tokenizer::ClipTokenizer;
use crate::weights::Weights;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub preprocess: PreprocessMode,
    pub decode: DecodeOptions,
    pub device: Device,
    /// Images or texts per forward pass.
    pub batch_size: usize,
    pub precision: Precision,
    pub cpu_kernels: CpuKernels,
    /// Decode JPEGs at reduced scale in the DCT, down to the resize target (PIL's `draft`):
    /// faster on large photos, not bit-identical to transformers.
    pub jpeg_draft: bool,
    /// Directory for packed CPU weights saved between loads ([`crate::pack_cache`]); `None`
    /// packs on every load.
    pub pack_cache: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            preprocess: PreprocessMode::default(),
            decode: DecodeOptions::default(),
            device: Device::Cpu,
            batch_size: 32,
            precision: Precision::F32,
            cpu_kernels: CpuKernels::Packed,
            jpeg_draft: false,
            pack_cache: None,
        }
    }
}

pub struct Clip {
    model: ClipModel,
    tokenizer: ClipTokenizer,
    preprocessor: Preprocessor,
    eos_rule: EosRule,
    device: Device,
    batch_size: usize,
    matmul_kernel: &'static str,
    resolved: ResolvedModel,
}

impl Clip {
    /// Loads a checkpoint directory or hub id (see [`hub::resolve`]).
    pub fn load(model: &str, options: &LoadOptions) -> Result<Self> {
        let resolved = hub::resolve(model)?;
        Self::from_resolved(resolved, options)
    }

    pub fn from_dir(dir: &Path, options: &LoadOptions) -> Result<Self> {
        Self::from_resolved(
            ResolvedModel {
                dir: dir.to_path_buf(),
                name: dir.display().to_string(),
            },
            options,
        )
    }

    fn from_resolved(resolved: ResolvedModel, options: &LoadOptions) -> Result<Self> {
        let dir = &resolved.dir;
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(ClipError::MissingFile {
                dir: dir.clone(),
                file: "config.json".into(),
                hint: "not a Hugging Face CLIP checkpoint directory".into(),
            });
        }
        let config = ClipConfig::from_file(&config_path)?;
        let image_size = config.vision_config.image_size as u32;
        let pp_path = dir.join("preprocessor_config.json");
        let pp_config = if pp_path.is_file() {
            PreprocessorConfig::from_file(&pp_path, image_size)?
        } else {
            PreprocessorConfig::openai(image_size)
        };
        if pp_config.crop_size != (image_size, image_size) {
            return Err(ClipError::config(
                &pp_path,
                "crop_size",
                format!(
                    "{:?} does not match the model's image_size {image_size}",
                    pp_config.crop_size
                ),
            ));
        }
        let tokenizer = ClipTokenizer::from_dir(dir, config.text_config.max_position_embeddings)?;
        let (path, dtype) = matmul_path(&options.device, options.precision, options.cpu_kernels)?;
        let mut weights = Weights::open(dir, dtype, &options.device)?;
        if let (Some(cache), crate::model::MatmulPath::Packed(format)) = (&options.pack_cache, path)
        {
            weights.use_pack_cache(cache, format);
        }
        if !weights.pack_cache().is_some_and(|c| c.is_hit()) {
            weights.read_ahead();
        }
        let model = ClipModel::load(&weights, &config, path)?;
        if let Some(cache) = weights.pack_cache() {
            cache.finish();
        }
        let mut decode = options.decode;
        if options.jpeg_draft {
            decode.draft_shortest_edge = pp_config.draft_shortest_edge();
        }
        Ok(Self {
            model,
            tokenizer,
            preprocessor: Preprocessor::new(pp_config, options.preprocess, decode),
            eos_rule: config.eos_rule(),
            device: options.device.clone(),
            batch_size: options.batch_size.max(1),
            matmul_kernel: match path {
                crate::model::MatmulPath::Packed(format) => {
                    clipkit_kernels::gemm::kernel_name(format)
                }
                crate::model::MatmulPath::Candle => "candle",
            },
            resolved,
        })
    }

    pub fn name(&self) -> &str {
        &self.resolved.name
    }

    pub fn model_dir(&self) -> &Path {
        &self.resolved.dir
    }

    pub fn config(&self) -> &ClipConfig {
        self.model.config()
    }

    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Which matmul kernel the linear layers run on (`amx-bf16`, `avx512-f32`, `candle`, …).
    pub fn matmul_kernel(&self) -> &'static str {
        self.matmul_kernel
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `exp(logit_scale)`.
    pub fn logit_scale(&self) -> f32 {
        self.model.logit_scale()
    }

    /// Images or texts per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn embedding_dim(&self) -> usize {
        self.config().projection_dim
    }

    /// Normalised text embeddings, one per text, in input order.
    ///
    /// Texts are batched by token length and padded to the longest in their batch, not to the
    /// full context: under the causal mask the pooled token never sees the padding, so the
    /// result is identical and short prompts cost a fraction.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = self.tokenizer.encode_batch(texts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(self.batch_size) {
            if self.model.is_packed() {
                // No padding: prompts back to back (see `TextTransformer::forward_packed`).
                let lengths: Vec<usize> = chunk.iter().map(|&i| ids[i].len()).collect();
                let mut eos_rows = Vec::with_capacity(chunk.len());
                let mut flat = Vec::with_capacity(lengths.iter().sum());
                for &i in chunk {
                    eos_rows.push(flat.len() + self.eos_rule.position(&ids[i]));
                    flat.extend_from_slice(&ids[i]);
                }
                let n = flat.len();
                let input = Tensor::from_vec(flat, n, &self.device)?;
                let features =
                    on_pool(|| self.model.text_features_packed(&input, &lengths, &eos_rows))?;
                for (&i, row) in chunk.iter().zip(to_rows(&l2_normalize(&features)?)?) {
                    out[i] = row;
                }
                continue;
            }
            let len = chunk.iter().map(|&i| ids[i].len()).max().unwrap_or(1);
            let mut flat = Vec::with_capacity(chunk.len() * len);
            let mut eos = Vec::with_capacity(chunk.len());
            for &i in chunk {
                eos.push(self.eos_rule.position(&ids[i]));
                flat.extend_from_slice(&ids[i]);
                flat.extend(std::iter::repeat_n(
                    self.tokenizer.pad_id(),
                    len - ids[i].len(),
                ));
            }
            let input = Tensor::from_vec(flat, (chunk.len(), len), &self.device)?;
            let features = on_pool(|| self.model.text_features(&input, &eos))?;
            for (&i, row) in chunk.iter().zip(to_rows(&l2_normalize(&features)?)?) {
                out[i] = row;
            }
        }
        Ok(out)
    }

    /// Normalised image embeddings of preprocessed `[3, H, W]` inputs.
    pub fn embed_pixels<P: AsRef<[f32]>>(&self, pixels: &[P]) -> Result<Vec<Vec<f32>>> {
        let (h, w) = self.preprocessor.output_size();
        let plane = 3 * h as usize * w as usize;
        let mut out = Vec::with_capacity(pixels.len());
        for chunk in pixels.chunks(self.batch_size) {
            let mut flat = Vec::with_capacity(chunk.len() * plane);
            for p in chunk {
                let p = p.as_ref();
                if p.len() != plane {
                    return Err(ClipError::WrongVectorDimension {
                        expected: plane,
                        got: p.len(),
                    });
                }
                flat.extend_from_slice(p);
            }
            out.extend(self.embed_batch(flat, chunk.len())?);
        }
        Ok(out)
    }

    /// The image tower on `n` preprocessed inputs laid end to end.
    fn embed_batch(&self, flat: Vec<f32>, n: usize) -> Result<Vec<Vec<f32>>> {
        let (h, w) = self.preprocessor.output_size();
        let input = Tensor::from_vec(flat, (n, 3, h as usize, w as usize), &self.device)?;
        let features = on_pool(|| self.model.image_features(&input))?;
        to_rows(&l2_normalize(&features)?)
    }

    /// Embeds image files; each file gets its own result so one broken file does not sink
    /// the batch.
    ///
    /// Decoding is pipelined with the model: while batch `i` runs, batch `i + 1` is decoded
    /// (`rayon::join`), so decode tasks fill the gaps the model's threads leave and files →
    /// embeddings runs close to model speed when decoding is cheaper than the model.
    pub fn embed_image_files(&self, paths: &[PathBuf]) -> Vec<Result<Vec<f32>>> {
        // 8-bit crops wait for the model, not floats: a quarter of the memory per image in
        // flight, normalised straight into the batch's input tensor.
        let decode = |chunk: &[PathBuf]| -> Vec<Result<RgbImage>> {
            chunk
                .par_iter()
                .map(|p| self.model_crop(&self.preprocessor.decode_file(p)?))
                .collect()
        };
        let mut chunks = paths.chunks(self.batch_size);
        let mut results = Vec::with_capacity(paths.len());
        let mut pending = chunks.next().map(decode);
        while let Some(decoded) = pending.take() {
            let next = chunks.next();
            let (embedded, next_decoded) =
                rayon::join(|| self.embed_decoded(decoded), || next.map(decode));
            results.extend(embedded);
            pending = next_decoded;
        }
        results
    }

    /// The 8-bit crop of one image file's bytes that [`Clip::embed_crops`] takes: a quarter of
    /// the memory of the normalised input, for callers that hold many images before running
    /// the model (the indexer's batches). `name` is for the error message.
    pub fn crop_bytes(&self, name: &Path, bytes: &[u8]) -> Result<RgbImage> {
        self.model_crop(&self.preprocessor.decode_bytes(name, bytes)?)
    }

    /// Normalised embeddings of crops made by [`Clip::crop_bytes`], one per crop, normalised
    /// straight into each batch's input tensor.
    pub fn embed_crops(&self, crops: Vec<RgbImage>) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(crops.len());
        let mut crops = crops.into_iter().peekable();
        while crops.peek().is_some() {
            let batch: Vec<Result<RgbImage>> =
                crops.by_ref().take(self.batch_size).map(Ok).collect();
            for r in self.embed_decoded(batch) {
                out.push(r?);
            }
        }
        Ok(out)
    }

    /// Resize and crop to the model's input, refusing a crop of another size (only possible
    /// without a centre crop, where sizes follow the file).
    fn model_crop(&self, decoded: &crate::image::DecodedImage) -> Result<RgbImage> {
        let crop = self.preprocessor.resize_and_crop(decoded);
        let (h, w) = self.preprocessor.output_size();
        if crop.dimensions() != (w, h) {
            return Err(ClipError::WrongVectorDimension {
                expected: 3 * (w * h) as usize,
                got: 3 * (crop.width() * crop.height()) as usize,
            });
        }
        Ok(crop)
    }

    /// The model on one batch of decoded images, keeping decode errors in place.
    fn embed_decoded(&self, decoded: Vec<Result<RgbImage>>) -> Vec<Result<Vec<f32>>> {
        let (h, w) = self.preprocessor.output_size();
        let plane = 3 * (h * w) as usize;
        let crops: Vec<&RgbImage> = decoded.iter().filter_map(|r| r.as_ref().ok()).collect();
        let n = crops.len();
        // In parallel: on the model's critical path, the other core would otherwise wait.
        let mut flat = vec![0f32; n * plane];
        flat.par_chunks_mut(plane)
            .zip(crops)
            .for_each(|(dst, crop)| self.preprocessor.normalize_to(crop, dst));
        let embedded = if n == 0 {
            Ok(Vec::new())
        } else {
            self.embed_batch(flat, n)
        };
        match embedded {
            Ok(embeddings) => {
                let mut embeddings = embeddings.into_iter();
                decoded
                    .into_iter()
                    .map(|r| r.map(|_| embeddings.next().expect("one per decoded image")))
                    .collect()
            }
            Err(e) => {
                let error = std::sync::Arc::new(e);
                decoded
                    .into_iter()
                    .map(|r| {
                        r.and_then(|_| {
                            Err(ClipError::BatchFailed {
                                images: n,
                                error: error.clone(),
                            })
                        })
                    })
                    .collect()
            }
        }
    }

    /// One embedding per label: each template filled with the label, embedded, normalised,
    /// averaged and renormalised. With no templates the label text is used as is.
    pub fn label_embeddings(
        &self,
        labels: &[String],
        templates: &[String],
    ) -> Result<Vec<Vec<f32>>> {
        if labels.is_empty() {
            return Err(ClipError::EmptyLabels);
        }
        if templates.is_empty() {
            let texts: Vec<&str> = labels.iter().map(String::as_str).collect();
            return self.embed_texts(&texts);
        }
        let mut prompts = Vec::with_capacity(labels.len() * templates.len());
        for label in labels {
            for t in templates {
                prompts.push(scores::apply_template(t, label)?);
            }
        }
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let embedded = self.embed_texts(&refs)?;
        Ok(embedded
            .chunks(templates.len())
            .map(scores::ensemble)
            .collect())
    }
}

fn to_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

/// Runs `f` on one of rayon's worker threads (at once if this is one). A tower forks and joins
/// a few hundred times per batch: from a worker each fork is a push onto its own deque, but from
/// any other thread it is an injection into the pool that puts the caller to sleep and wakes it
/// again, two futex round trips per op. Under a hypervisor those cost tens of microseconds each:
/// 30% of a batch-1 int8 profile on a KVM Xeon.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}
