//! Measurement behind `label.rs`'s choice for image → labels (not a test): L labels over N
//! images, once as a matrix product per chunk of images with a top-k per row (what
//! `label` does), once as a query per image of an HNSW index over the labels (usearch, f32,
//! M = 16, ef 128 — what it did before beyond 4096 labels); then `label` itself end to end
//! through an embedded store of the N images (reading the store included).
//!
//! cargo run -p clipkit-index --example label_scale --config 'profile.dev.package.clipkit-index.opt-level=3' -- 100000 10000

use std::path::PathBuf;
use std::time::Instant;

use clipkit_image::PreprocessMode;
use clipkit_index::embedded::EmbeddedStore;
use clipkit_index::label::{label, LabelOptions};
use clipkit_index::{Batch, CollectionInfo, Entry, FileRecord, Filter, LabelVector, Store};
use rayon::prelude::*;

struct Gen(u64);
impl Gen {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
    fn unit(&mut self, centre: Option<&[f32]>, dim: usize, spread: f32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|i| centre.map_or(0.0, |c| c[i]) + spread * self.next())
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

fn main() {
    let argv: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("N L [dim] [skip-store]"))
        .collect();
    let (n, l) = (argv[0], argv[1]);
    let dim = argv.get(2).copied().unwrap_or(512);
    let mut gen = Gen(7);
    let centres: Vec<Vec<f32>> = (0..1000).map(|_| gen.unit(None, dim, 1.0)).collect();
    let spread = 4.0 / (dim as f32).sqrt();
    let images: Vec<Vec<f32>> = (0..n)
        .map(|i| gen.unit(Some(&centres[i % 1000]), dim, spread))
        .collect();
    let labels: Vec<LabelVector> = (0..l)
        .map(|i| LabelVector {
            label: format!("label {i}"),
            vector: gen.unit(Some(&centres[(i * 7) % 1000]), dim, spread),
        })
        .collect();
    println!(
        "{n} images × {l} labels × {dim} dims, {} threads",
        rayon::current_num_threads()
    );

    // 1. Matrix product per chunk + top-3 with softmax probabilities (label() with no store).
    let t = Instant::now();
    let flat: Vec<f32> = labels.iter().flat_map(|x| x.vector.clone()).collect();
    let m = candle_core::Tensor::from_vec(flat, (l, dim), &candle_core::Device::Cpu)
        .unwrap()
        .t()
        .unwrap()
        .contiguous()
        .unwrap();
    let mut gemm_top = Vec::with_capacity(n);
    let mut gemm_only = 0.0;
    for chunk in images.chunks(1024) {
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        let tg = Instant::now();
        let s = candle_core::Tensor::from_vec(flat, (chunk.len(), dim), &candle_core::Device::Cpu)
            .unwrap()
            .matmul(&m)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        gemm_only += tg.elapsed().as_secs_f64();
        let rows: Vec<(usize, f32)> = s
            .par_chunks(l)
            .map(|row| {
                let (mut bi, mut bs) = (0, f32::MIN);
                for (i, &x) in row.iter().enumerate() {
                    if x > bs {
                        (bi, bs) = (i, x);
                    }
                }
                let sum: f32 = row.iter().map(|&c| (100.0 * (c - bs)).exp()).sum();
                (bi, 1.0 / sum)
            })
            .collect();
        gemm_top.extend(rows);
    }
    let gemm_s = t.elapsed().as_secs_f64();
    println!(
        "matrix product + top-1 + softmax: {gemm_s:.2} s ({gemm_only:.2} s in the product, {:.0} GFLOP/s)",
        2.0 * n as f64 * l as f64 * dim as f64 / gemm_only / 1e9
    );

    // 1b. The same with clipkit-kernels' packed f32 GEMM and vectorised exp (what label() runs).
    let t = Instant::now();
    let flat: Vec<f32> = labels.iter().flat_map(|x| x.vector.clone()).collect();
    let packed = clipkit_kernels::PackedWeights::new(
        &flat,
        l,
        dim,
        None,
        clipkit_kernels::WeightFormat::F32,
    );
    let mut packed_only = 0.0;
    let mut packed_top = Vec::with_capacity(n);
    let mut s = vec![0f32; 1024 * l];
    for chunk in images.chunks(1024) {
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        let tg = Instant::now();
        let s = &mut s[..chunk.len() * l];
        packed.matmul(&flat, chunk.len(), Default::default(), s);
        packed_only += tg.elapsed().as_secs_f64();
        let rows: Vec<usize> = s
            .par_chunks_mut(l)
            .map(|row| {
                let (mut bi, mut bs) = (0, f32::MIN);
                for (i, &x) in row.iter().enumerate() {
                    if x > bs {
                        (bi, bs) = (i, x);
                    }
                }
                row.iter_mut().for_each(|c| *c = 100.0 * (*c - bs));
                clipkit_kernels::act::exp_slice(row);
                std::hint::black_box(row.iter().sum::<f32>());
                bi
            })
            .collect();
        packed_top.extend(rows);
    }
    let packed_s = t.elapsed().as_secs_f64();
    let agree = packed_top
        .iter()
        .zip(&gemm_top)
        .filter(|(a, g)| **a == g.0)
        .count();
    println!(
        "packed f32 GEMM + top-1 + softmax: {packed_s:.2} s ({packed_only:.2} s in the product, {:.0} GFLOP/s), top-1 agrees on {:.4}",
        2.0 * n as f64 * l as f64 * dim as f64 / packed_only / 1e9,
        agree as f64 / n as f64
    );

    // 2. HNSW over the labels, one query per image.
    let t = Instant::now();
    let index = usearch::Index::new(&usearch::IndexOptions {
        dimensions: dim,
        metric: usearch::MetricKind::IP,
        quantization: usearch::ScalarKind::F32,
        connectivity: 16,
        expansion_add: 128,
        expansion_search: 128,
        multi: false,
    })
    .unwrap();
    index
        .reserve_capacity_and_threads(l, rayon::current_num_threads())
        .unwrap();
    labels
        .par_iter()
        .enumerate()
        .for_each(|(i, x)| index.add(i as u64, &x.vector).unwrap());
    let build = t.elapsed().as_secs_f64();
    let ann: Vec<u64> = images
        .par_iter()
        .map(|q| index.search(q, 3).unwrap().keys[0])
        .collect();
    let ann_s = t.elapsed().as_secs_f64();
    let agree = ann
        .iter()
        .zip(&gemm_top)
        .filter(|(a, g)| **a as usize == g.0)
        .count();
    println!(
        "HNSW over labels: {ann_s:.2} s ({build:.2} s to build), top-1 agrees with exact on {:.4}",
        agree as f64 / n as f64
    );
    if argv.get(3) == Some(&1) {
        return;
    }

    // 3. label() end to end through an embedded store.
    let dir = std::env::temp_dir().join("clipkit-label-scale");
    let _ = std::fs::remove_dir_all(&dir);
    let info = CollectionInfo {
        model: "bench".into(),
        dim,
        preprocess: PreprocessMode::Transformers,
        family: None,
    };
    let mut store = EmbeddedStore::open_dir(&dir, Some(&info)).unwrap();
    for (c, chunk) in images.chunks(10_000).enumerate() {
        let upserts = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let j = c * 10_000 + i;
                Entry {
                    file: FileRecord {
                        path: PathBuf::from(format!("/p/{:03}/{j:08}.jpg", j % 1000)),
                        size: j as u64,
                        mtime_ns: j as i64,
                        hash: format!("{j:064x}"),
                        meta: Default::default(),
                    },
                    vector: v.clone(),
                }
            })
            .collect();
        store
            .apply(Batch {
                upserts,
                removals: vec![],
            })
            .unwrap();
    }
    store.flush().unwrap();
    let t = Instant::now();
    let mut scanned = 0;
    store
        .scan(1024, &mut |e| {
            scanned += e.len();
            Ok(())
        })
        .unwrap();
    println!(
        "reading the store: {:.2} s for {scanned}",
        t.elapsed().as_secs_f64()
    );
    let options = |ipl, lpi| LabelOptions {
        images_per_label: ipl,
        labels_per_image: lpi,
        scoring: clipkit_core::Scoring::Softmax { logit_scale: 100.0 },
        min_score: None,
        filter: Filter::default(),
    };
    let t = Instant::now();
    let out = label(&store, &labels, &options(0, 3)).unwrap();
    println!(
        "label(): top-3 labels of {} images in {:.2} s",
        out.per_image.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let out = label(&store, &labels, &options(10, 0)).unwrap();
    println!(
        "label(): top-10 images of {} labels in {:.2} s",
        out.per_label.len(),
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
