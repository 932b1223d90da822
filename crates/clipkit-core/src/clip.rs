//! [`Clip`]: a loaded checkpoint with its tokenizer and preprocessor, embedding batches of
//! images and texts into the shared, L2-normalised space.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use rayon::prelude::*;

use crate::device::{matmul_path, CpuKernels, MatmulPath, Precision};
use crate::error::{ClipError, Result};
use crate::family::{self, ModelFamily};
use crate::hub::{self, ResolvedModel};
use crate::model::layers::l2_normalize;
use crate::model::{DualEncoder, TextBatch, TextLayout};
use crate::scoring::Scoring;
use crate::tokenizer::TextTokenizer;
use clipkit_image::{DecodeOptions, DecodedImage, PreprocessMode, Preprocessor};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Which reference the pixels match; `None` is the family's own library (transformers'
    /// PIL processor for CLIP and SigLIP, open_clip's torchvision transform for open_clip).
    pub preprocess: Option<PreprocessMode>,
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
            preprocess: None,
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

/// A loaded checkpoint of any supported family: its two towers, tokenizer and preprocessor.
pub struct Clip {
    model: Box<dyn DualEncoder>,
    family: ModelFamily,
    tokenizer: TextTokenizer,
    preprocessor: Preprocessor,
    device: Device,
    batch_size: usize,
    path: MatmulPath,
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
        let family = ModelFamily::detect(&resolved.dir)?;
        let (path, dtype) = matmul_path(&options.device, options.precision, options.cpu_kernels)?;
        let plan = family::WeightsPlan {
            device: &options.device,
            path,
            dtype,
            pack_cache: options.pack_cache.as_deref(),
        };
        let parts = family::load(family, &resolved.dir, &plan)?;
        let mut decode = options.decode;
        if options.jpeg_draft {
            decode.draft_shortest_edge = parts.preprocess.draft_shortest_edge();
        }
        Ok(Self {
            model: parts.model,
            family,
            tokenizer: parts.tokenizer,
            preprocessor: Preprocessor::new(
                parts.preprocess,
                options.preprocess.unwrap_or(parts.reference_mode),
                decode,
            ),
            device: options.device.clone(),
            batch_size: options.batch_size.max(1),
            path,
            resolved,
        })
    }

    pub fn name(&self) -> &str {
        &self.resolved.name
    }

    pub fn model_dir(&self) -> &Path {
        &self.resolved.dir
    }

    /// The model family the checkpoint belongs to.
    pub fn family(&self) -> ModelFamily {
        self.family
    }

    /// The family's towers, for callers that run them on their own inputs.
    pub fn model(&self) -> &dyn DualEncoder {
        self.model.as_ref()
    }

    /// Side of the square image the image tower takes, in pixels.
    pub fn image_size(&self) -> usize {
        self.model.image_size()
    }

    /// Tokens the image tower reads per image (patches and any class token).
    pub fn image_tokens(&self) -> usize {
        self.model.image_tokens()
    }

    /// Floating-point operations of one image through the image tower, for GFLOP/s figures.
    pub fn image_flops(&self) -> f64 {
        self.model.image_flops()
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// The preprocessing reference in use (what a collection records).
    pub fn preprocess_mode(&self) -> PreprocessMode {
        self.preprocessor.mode
    }

    /// Which matmul kernel the linear layers run on (`amx-bf16`, `avx512-f32`, `candle`, …).
    pub fn matmul_kernel(&self) -> &'static str {
        self.path.kernel_name()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `exp(logit_scale)`.
    pub fn logit_scale(&self) -> f32 {
        self.model.scoring().logit_scale()
    }

    /// How this checkpoint's family turns cosines into logits and probabilities (CLIP's
    /// softmax over `exp(logit_scale)·cos`, SigLIP's sigmoid with `logit_bias`).
    pub fn scoring(&self) -> Scoring {
        self.model.scoring()
    }

    /// Images or texts per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn embedding_dim(&self) -> usize {
        self.model.embedding_dim()
    }

    /// Normalised text embeddings, one per text, in input order.
    ///
    /// Texts are batched by token length. A causal tower on the packed CPU kernels takes them
    /// back to back with no padding at all; otherwise they are padded to the longest in their
    /// batch (under the causal mask the pooled token never sees the padding, so the result is
    /// identical and short prompts cost a fraction), or to the fixed length a family without a
    /// mask was trained with ([`crate::model::TextInput::pad_to`]).
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let input = self.model.text_input();
        let ids = self.tokenizer.encode_batch(texts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let packed = self.path.is_packed() && input.causal && input.pad_to.is_none();
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(self.batch_size) {
            let batch = if packed {
                let lengths: Vec<usize> = chunk.iter().map(|&i| ids[i].len()).collect();
                let mut pool_rows = Vec::with_capacity(chunk.len());
                let mut flat = Vec::with_capacity(lengths.iter().sum());
                for &i in chunk {
                    pool_rows.push(flat.len() + input.pooling.position(&ids[i], ids[i].len()));
                    flat.extend_from_slice(&ids[i]);
                }
                let n = flat.len();
                TextBatch {
                    ids: Tensor::from_vec(flat, n, &self.device)?,
                    layout: TextLayout::Packed { lengths, pool_rows },
                }
            } else {
                let longest = chunk.iter().map(|&i| ids[i].len()).max().unwrap_or(1);
                let len = input.pad_to.unwrap_or(longest).max(longest);
                let mut flat = Vec::with_capacity(chunk.len() * len);
                let mut pool_positions = Vec::with_capacity(chunk.len());
                for &i in chunk {
                    pool_positions.push(input.pooling.position(&ids[i], len));
                    flat.extend_from_slice(&ids[i]);
                    flat.extend(std::iter::repeat_n(
                        self.tokenizer.pad_id(),
                        len - ids[i].len(),
                    ));
                }
                TextBatch {
                    ids: Tensor::from_vec(flat, (chunk.len(), len), &self.device)?,
                    layout: TextLayout::Padded { pool_positions },
                }
            };
            let features = on_pool(|| self.model.text_features(&batch))?;
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
    fn model_crop(&self, decoded: &DecodedImage) -> Result<RgbImage> {
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
