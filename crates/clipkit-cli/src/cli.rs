//! Command-line flags, as clap parses them. Checking and combining them into settings the
//! library understands happens in [`crate::settings`], so each stays simple.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clipkit_image::PreprocessMode;

pub mod values;

#[derive(Debug, Parser)]
#[command(
    name = "clipkit",
    version,
    about = "CLIP-family models in one binary: embeddings, similarity, zero-shot classification, charts",
    after_help = "Models: a checkpoint directory (transformers: config.json + model.safetensors; \
                  open_clip: open_clip_config.json + weights) or a hub id such as \
                  openai/clip-vit-base-patch32. `clipkit models` lists the known ones."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Zero-shot classification: each label's logit and probability per image.
    Classify(ClassifyArgs),
    /// Normalised image and text embeddings.
    Embed(EmbedArgs),
    /// The image × text logits matrix (`logits_per_image`).
    Similarity(SimilarityArgs),
    /// The image beside a bar chart of its label probabilities (PNG or SVG).
    Plot(PlotArgs),
    /// Zero-shot accuracy on a labelled image set (CLIP_benchmark protocol).
    Eval(EvalArgs),
    /// Few-shot linear probe: fit on k images per class, compare with zero-shot, save it.
    Probe(ProbeArgs),
    /// Throughput: images/s and texts/s of the model, and end to end from image files.
    Bench(BenchArgs),
    /// The checkpoints clipkit knows: family, sizes, published accuracy, speed on this CPU.
    Models(ModelsArgs),
    /// Keep a collection of image embeddings in step with folders (add, status).
    #[command(subcommand)]
    Index(IndexCommand),
    /// Search a collection with words (`"beach" - "people"`) or images.
    Search(SearchArgs),
    /// Zero-shot labelling of a whole collection: top images per label, top labels per image.
    Label(CollectionLabelArgs),
    /// Group a collection with k-means (k chosen automatically unless given).
    Cluster(ClusterArgs),
    /// Groups of near-duplicate images.
    Dedup(DedupArgs),
    /// Write a collection in clip-retrieval's layout (img_emb/*.npy + metadata/*.parquet).
    Export(ExportArgs),
    /// Read a collection written by `export` (or by clip-retrieval) into a store.
    Import(ImportArgs),
    /// HTTP API (OpenAI-compatible embeddings, classify, similarity, search) and a web page.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Collection: a directory (embedded SQLite + ANN index) or milvus://HOST:PORT/COLLECTION.
    #[arg(long, short = 's', env = "CLIPKIT_STORE", default_value = ".clipkit")]
    pub store: String,
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Embed new and changed images under PATHs; recognise moves and copies; drop deleted files.
    Add(IndexAddArgs),
    /// What is indexed, and what changed on disk since (nothing is read or embedded).
    Status(IndexStatusArgs),
}

#[derive(Debug, Args)]
pub struct IndexAddArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Folders (searched recursively) or image files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Leave out paths matching this glob (repeatable), e.g. '*/thumbnails/*' or '*.gif'.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Include files and folders whose name starts with a dot.
    #[arg(long)]
    pub hidden: bool,
    /// Files committed per transaction (a killed run loses at most this many).
    #[arg(long, default_value_t = 64, value_parser = values::at_least_one)]
    pub commit_every: usize,
    /// Index only worker I's share of the files, out of N workers (counted from 0) that
    /// index the same paths into one store, e.g. `--shard 0/4` … `--shard 3/4` on four
    /// machines; each file goes to one worker by a hash of its path.
    #[arg(long, value_name = "I/N", value_parser = values::shard)]
    pub shard: Option<clipkit_index::shard::Shard>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub print: FormatArgs,
}

#[derive(Debug, Args)]
pub struct IndexStatusArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Look at these folders instead of the ones indexed before.
    pub paths: Vec<PathBuf>,
    #[arg(long)]
    pub exclude: Vec<String>,
    #[arg(long)]
    pub hidden: bool,
    /// Also list the stale files, not just count them.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    #[command(flatten)]
    pub print: FormatArgs,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text query parts; a lone `-` makes the next part negative, a lone `+` positive:
    /// `clipkit search beach - people`.
    pub query: Vec<String>,
    /// Push results away from this text (repeatable; same as `- TEXT`).
    #[arg(long)]
    pub not: Vec<String>,
    /// Query by image (repeatable; combined with the text parts).
    #[arg(long)]
    pub image: Vec<PathBuf>,
    /// Push results away from this image.
    #[arg(long)]
    pub not_image: Vec<PathBuf>,
    /// Number of results.
    #[arg(long, short = 'k', default_value_t = 10)]
    pub top_k: usize,
    /// Only results with cosine similarity at least this.
    #[arg(long)]
    pub threshold: Option<f32>,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub print: FormatArgs,
}

#[derive(Debug, Args)]
pub struct CollectionLabelArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub labels: LabelArgs,
    /// Name under which the label vectors are stored in the collection.
    #[arg(long, default_value = "default")]
    pub set: String,
    /// Best images kept per label.
    #[arg(long, default_value_t = 10)]
    pub images_per_label: usize,
    /// Best labels kept per image.
    #[arg(long, default_value_t = 3)]
    pub labels_per_image: usize,
    /// Drop pairs with cosine below this.
    #[arg(long)]
    pub min_score: Option<f32>,
    /// Write the results to FILE: .csv (one row per image–label pair), .json or .parquet.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub print: FormatArgs,
}

/// Which photos a search or a labelling may return; restrictions combine (all must hold).
/// Dates are on the photo's own clock: the EXIF capture date, else the file's modification
/// time (UTC).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Filters")]
pub struct FilterArgs {
    /// Only photos taken at or after DATE: YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], or a bare YYYY
    /// or YYYY-MM (its first day).
    #[arg(long, value_name = "DATE", value_parser = values::date)]
    pub after: Option<i64>,
    /// Only photos taken before DATE, which is excluded: `--before 2023-09-01` ends with
    /// 31 August. Same forms as --after.
    #[arg(long, value_name = "DATE", value_parser = values::date)]
    pub before: Option<i64>,
    /// Only files under FOLDER (repeatable: under any of them).
    #[arg(long = "in", value_name = "FOLDER")]
    pub folders: Vec<PathBuf>,
    /// Only photos taken within RADIUS of a point, e.g. `48.85,2.35,20km` (m, km or mi);
    /// photos without a GPS position never match.
    #[arg(long, value_name = "LAT,LON,RADIUS", value_parser = values::near)]
    pub near: Option<clipkit_index::Near>,
    /// Only photos whose camera (make and model) contains TEXT, ignoring case.
    #[arg(long, value_name = "TEXT")]
    pub camera: Option<String>,
    /// Only files of these types (repeatable or comma-separated: `jpg,png`; jpeg is jpg).
    #[arg(long = "type", value_name = "EXT", value_delimiter = ',', value_parser = values::file_type)]
    pub file_types: Vec<String>,
    /// Only files of at least SIZE: bytes, or with a unit (200KB, 1.5MB, 4MiB).
    #[arg(long, value_name = "SIZE", value_parser = values::size)]
    pub min_size: Option<u64>,
    /// Only files of at most SIZE.
    #[arg(long, value_name = "SIZE", value_parser = values::size)]
    pub max_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Labels to name the clusters with (optional).
    #[command(flatten)]
    pub labels: LabelArgs,
    /// Number of clusters; chosen by silhouette when not given.
    #[arg(short = 'k', long = "clusters")]
    pub k: Option<usize>,
    /// Largest k tried when choosing automatically.
    #[arg(long, default_value_t = 20)]
    pub max_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images nearest each centroid shown as its representatives.
    #[arg(long, default_value_t = 5)]
    pub representatives: usize,
    /// Write one contact-sheet PNG per cluster into DIR.
    #[arg(long)]
    pub contact_sheets: Option<PathBuf>,
    #[command(flatten)]
    pub print: FormatArgs,
}

#[derive(Debug, Args)]
pub struct DedupArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Cosine at or above which two images are near-duplicates, or `auto` (calibrated on
    /// this collection's nearest-neighbour distribution).
    #[arg(long, short = 't', default_value = "auto", value_parser = values::dedup_threshold)]
    pub threshold: clipkit_index::dedup::Threshold,
    /// Neighbours examined per image.
    #[arg(long, default_value_t = 10)]
    pub neighbours: usize,
    #[command(flatten)]
    pub print: FormatArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    /// img_emb/img_emb_N.npy + metadata/metadata_N.parquet (clip-retrieval).
    Npy,
    /// embeddings/part_N.parquet with an `embedding` column.
    Parquet,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Output folder.
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = ExportFormatArg::Npy)]
    pub format: ExportFormatArg,
    /// Store embeddings as f16 (clip-retrieval's choice; half the size).
    #[arg(long)]
    pub half: bool,
    /// Rows per file.
    #[arg(long, default_value_t = 1_000_000, value_parser = values::at_least_one)]
    pub shard_size: usize,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The model the embeddings came from (checked against their size).
    #[command(flatten)]
    pub model: ModelArgs,
    /// A folder written by `clipkit export` or clip-retrieval.
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A collection to search (a directory or milvus://HOST:PORT/COLLECTION); without one the
    /// search endpoints answer 404.
    #[arg(long, short = 's', env = "CLIPKIT_STORE")]
    pub store: Option<String>,
    /// Address to listen on. Port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// The model name reported in responses and accepted in requests (default: --model).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Most items per model batch (default: --batch-size).
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Longest a batch waits for more items after its first, in milliseconds.
    #[arg(long, default_value_t = 5.0, value_parser = values::non_negative)]
    pub max_wait_ms: f64,
    /// Items admitted at once (decoding, queued, in the model); beyond it requests get 429.
    #[arg(long, default_value_t = 256)]
    pub queue_capacity: usize,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 16.0, value_parser = values::positive)]
    pub max_body_mib: f64,
    /// Largest image accepted, in pixels (checked from the header before decoding).
    #[arg(long, default_value_t = 40_000_000)]
    pub max_image_pixels: u64,
    /// Most images + texts in one request.
    #[arg(long, default_value_t = 128)]
    pub max_inputs: usize,
    /// Per-request deadline in seconds (504 past it).
    #[arg(long, default_value_t = 30.0, value_parser = values::non_negative)]
    pub timeout: f64,
    /// Requests handled at once; beyond it requests get 429 before their body is read.
    #[arg(long, default_value_t = 256)]
    pub max_concurrent_requests: usize,
    /// Images decoded at once (default: the number of cores).
    #[arg(long)]
    pub decode_threads: Option<usize>,
    /// Tokio worker threads for HTTP (default: the number of cores).
    #[arg(long)]
    pub http_threads: Option<usize>,
}

/// How a command prints its result on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document, with every number at full precision.
    Json,
    /// A header row then one row per record, numbers at full precision.
    Csv,
}

/// `--format`, one flag shared by every command that prints a result, so that each accepts
/// the same values and honours every one of them.
#[derive(Debug, Clone, Copy, Args)]
pub struct FormatArgs {
    /// How the result is printed.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// Full precision: the numbers transformers gives.
    F32,
    /// bf16 weights and activations, f32 accumulation (AVX-512 BF16 on the CPU, or CUDA):
    /// about twice the speed, embeddings within cosine 0.999 of f32 (docs/kernels.md#precision).
    Bf16,
    /// f16 weights and activations (AVX-512 FP16 on the CPU: Sapphire Rapids+ Xeons, where it
    /// is the fast one; or CUDA).
    F16,
    /// int8 weights and activations, exact integer sums (AVX-512 VNNI or AMX, or AVX2): the
    /// fastest on a CPU, embeddings within cosine 0.999 of f32 (docs/kernels.md#precision).
    Int8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CpuKernelsArg {
    /// clipkit's packed-weight kernels with fused epilogues.
    Packed,
    /// candle's ops throughout: the reference the packed kernels are tested against.
    Candle,
}

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Checkpoint directory or Hugging Face Hub id.
    #[arg(long, short = 'm', env = "CLIPKIT_MODEL", default_value = clipkit_core::hub::DEFAULT_MODEL)]
    pub model: String,
    /// Which reference the image preprocessing reproduces [default: the model family's own
    /// library: hf for CLIP and SigLIP, openai (torchvision's order) for open_clip]
    #[arg(long, value_enum)]
    pub preprocess: Option<PreprocessMode>,
    /// Ignore EXIF orientation (transformers does; by default photos are turned upright).
    #[arg(long)]
    pub ignore_exif: bool,
    /// Decode JPEGs at 1/2, 1/4 or 1/8 scale in the DCT when they stay larger than the model's
    /// resize target (PIL's draft mode). Several times faster on large photos; the pixels are
    /// no longer transformers' (the effect on embeddings: docs/benchmarks.md, end to end).
    #[arg(long)]
    pub jpeg_draft: bool,
    /// Refuse images with more pixels than this (decompression-bomb guard; PIL's limit).
    #[arg(long, default_value_t = clipkit_core::image::decode::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Images or texts per forward pass.
    #[arg(long, default_value_t = 32, value_parser = values::at_least_one)]
    pub batch_size: usize,
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Numeric precision of the model.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Which code runs the model on the CPU.
    #[arg(long, value_enum, default_value_t = CpuKernelsArg::Packed, hide = true)]
    pub cpu_kernels: CpuKernelsArg,
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// A class label (repeat for more).
    #[arg(long = "label", short = 'l')]
    pub labels: Vec<String>,
    /// A file with one label per line (blank lines and lines starting with # are skipped).
    #[arg(long = "labels")]
    pub labels_file: Option<PathBuf>,
    /// Prompt template with `{}` (or `{c}`) for the label; several are ensembled.
    #[arg(long = "template", short = 't')]
    pub templates: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub labels: LabelArgs,
    /// Only the k most probable labels per image, best first.
    #[arg(long, value_parser = values::at_least_one)]
    pub top_k: Option<usize>,
    /// Classify with a probe saved by `clipkit probe` instead of zero-shot labels.
    #[arg(long, conflicts_with_all = ["labels", "labels_file", "templates"])]
    pub probe: Option<PathBuf>,
    #[command(flatten)]
    pub print: FormatArgs,
    /// Image files or directories (searched recursively).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// An image file or directory (repeat for more).
    #[arg(long = "image", short = 'i')]
    pub images: Vec<PathBuf>,
    /// A text (repeat for more).
    #[arg(long = "text", short = 'x')]
    pub texts: Vec<String>,
    /// Write the vectors to FILE.npy (images then texts, one row each) or FILE.json.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub print: FormatArgs,
}

#[derive(Debug, Args)]
pub struct SimilarityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long = "image", short = 'i', required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long = "text", short = 'x', required = true)]
    pub texts: Vec<String>,
    #[command(flatten)]
    pub print: FormatArgs,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub labels: LabelArgs,
    /// Output chart: .png or .svg.
    #[arg(long, short = 'o', default_value = "chart.png")]
    pub output: PathBuf,
    /// At most this many bars.
    #[arg(long, default_value_t = 10)]
    pub max_bars: usize,
    pub image: PathBuf,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Templates: `openai` (OpenAI's 80 ImageNet prompts), `openai7`, `none`, or a file with
    /// one template per line using `{c}` for the class name.
    #[arg(long, default_value = "openai")]
    pub templates: String,
    /// Class names, one per line in class order (default: folder names or list labels).
    #[arg(long, conflicts_with = "imagenet_classnames")]
    pub classnames: Option<PathBuf>,
    /// Use OpenAI's 1,000 curated ImageNet class names (for an ImageNet-1k val folder).
    #[arg(long)]
    pub imagenet_classnames: bool,
    /// `100` (CLIP_benchmark, published numbers) or `model` (the checkpoint's own scale).
    #[arg(long, default_value = "100", value_parser = values::logit_scale)]
    pub logit_scale: clipkit_eval::LogitScale,
    /// Include every image's logits and prediction in the JSON output.
    #[arg(long)]
    pub per_image: bool,
    /// Write confusion.png, per_class.png and mistakes.png into this folder.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Where image embeddings are cached (default: ~/.cache/clipkit/embeddings).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the embedding cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    #[command(flatten)]
    pub print: FormatArgs,
    /// An ImageFolder directory (`class_name/*.jpg`), or a .csv / .jsonl of (path, label).
    pub dataset: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeMethod {
    /// Multinomial logistic regression (scikit-learn's objective, L2, strength --c).
    Logreg,
    /// Nearest class mean (cosine to each class's mean embedding).
    Ncm,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training images per class (the first k of each class in dataset order); the rest test.
    #[arg(long, default_value_t = 16, value_parser = values::at_least_one)]
    pub shots: usize,
    #[arg(long, value_enum, default_value_t = ProbeMethod::Logreg)]
    pub method: ProbeMethod,
    /// Inverse regularisation strength of the logistic regression (scikit-learn's C).
    #[arg(long, default_value_t = 1.0, value_parser = values::positive)]
    pub c: f64,
    /// Templates for the zero-shot comparison (as for `eval`).
    #[arg(long, default_value = "openai")]
    pub templates: String,
    /// Save the fitted probe here (JSON), for `clipkit classify --probe`.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Where image embeddings are cached (default: ~/.cache/clipkit/embeddings).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub print: FormatArgs,
    /// An ImageFolder directory, or a .csv / .jsonl of (path, label).
    pub dataset: PathBuf,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// `bench store`: the collection store instead of a model.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images (and texts) per forward pass.
    #[arg(long, default_value_t = 32, value_parser = values::at_least_one)]
    pub batch: usize,
    /// Timed repetitions; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = values::at_least_one)]
    pub iters: usize,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = values::at_least_one)]
    pub threads: Option<usize>,
    /// Also time embedding the image files in this folder, decoding included.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Do not add this run's images/s to the results `clipkit models` shows.
    #[arg(long)]
    pub no_record: bool,
    #[command(flatten)]
    pub print: FormatArgs,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The embedded store at scale, on synthetic clustered vectors (or an .npy file): ingest,
    /// graph build, memory and disk, search latency and recall@10, filtered search,
    /// labelling, and bare usearch on the same graph and queries (docs/store-scale.md).
    Store(BenchStoreArgs),
}

#[derive(Debug, Args)]
pub struct BenchStoreArgs {
    /// Vectors in the store.
    #[arg(long, default_value_t = 100_000, value_parser = values::at_least_one)]
    pub vectors: usize,
    /// Dimension of the synthetic vectors (an --npy file's rows set it).
    #[arg(long, default_value_t = 512, value_parser = values::at_least_one)]
    pub dim: usize,
    /// Search queries, timed one at a time (k = 10).
    #[arg(long, default_value_t = 1000, value_parser = values::at_least_one)]
    pub queries: usize,
    /// Random labels for a labelling run (top 10 images per label, best label per image);
    /// 0 skips it.
    #[arg(long, default_value_t = 0)]
    pub labels: usize,
    /// Also time filtered search: a capture-date range holding this fraction of the store.
    #[arg(long, value_parser = values::fraction)]
    pub filter_selectivity: Option<f64>,
    /// Index the rows of this f32 .npy file of shape (N, D) instead of synthetic vectors
    /// (the rows after the first --vectors are the queries, when there are enough).
    #[arg(long)]
    pub npy: Option<PathBuf>,
    /// Where the temporary store is built [default: the system's temporary directory].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Links per graph node (HNSW's M).
    #[arg(long, value_parser = values::at_least_one)]
    pub connectivity: Option<usize>,
    /// Candidate list while building the graph (efConstruction).
    #[arg(long, value_parser = values::at_least_one)]
    pub expansion_add: Option<usize>,
    /// Candidate list while searching (ef).
    #[arg(long, value_parser = values::at_least_one)]
    pub expansion_search: Option<usize>,
    /// How the graph stores its copies of the vectors.
    #[arg(long, value_enum)]
    pub graph_scalar: Option<GraphScalarArg>,
    /// Candidates rescored against the f32 vectors, as a multiple of k.
    #[arg(long, value_parser = values::at_least_one)]
    pub rescore_factor: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = values::at_least_one)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub print: FormatArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphScalarArg {
    I8,
    F16,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Only models whose text tower reads many languages.
    #[arg(long)]
    pub multilingual: bool,
    #[command(flatten)]
    pub print: FormatArgs,
}
