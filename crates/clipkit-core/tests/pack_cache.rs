//! A model loaded from its saved packed weights embeds exactly as the one that packed them.

mod common;

use clipkit_core::device::Precision;
use clipkit_core::{Clip, LoadOptions};

#[test]
fn second_load_reads_the_saved_panels_and_embeds_identically() {
    let cache = tempfile::tempdir().unwrap();
    let fixtures = common::fixtures();
    let images: Vec<_> = ["chelsea.png", "photo.jpg"]
        .iter()
        .map(|n| fixtures.join("images").join(n))
        .collect();
    for precision in [Precision::F32, Precision::Int8] {
        let int8 = clipkit_kernels::has_avx512_vnni() || clipkit_kernels::has_avx2();
        if precision == Precision::Int8 && !int8 {
            continue;
        }
        let options = LoadOptions {
            precision,
            pack_cache: Some(cache.path().to_path_buf()),
            ..LoadOptions::default()
        };
        let embed = |clip: &Clip| {
            let img: Vec<Vec<f32>> = clip
                .embed_image_files(&images)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            (
                img,
                clip.embed_texts(&["a photo of a cat", "a dog"]).unwrap(),
            )
        };
        let model = fixtures.join("models/tiny-quickgelu");
        let packed_now = Clip::from_dir(&model, &options).unwrap();
        let files = std::fs::read_dir(cache.path()).unwrap().count();
        let from_cache = Clip::from_dir(&model, &options).unwrap();
        assert_eq!(
            std::fs::read_dir(cache.path()).unwrap().count(),
            files,
            "the second load wrote nothing"
        );
        assert!(files >= 1);
        assert_eq!(embed(&packed_now), embed(&from_cache), "{precision:?}");
    }
    // One file per weight format.
    let expected = if clipkit_kernels::has_avx512_vnni() || clipkit_kernels::has_avx2() {
        2
    } else {
        1
    };
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), expected);
}
