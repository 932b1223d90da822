//! The checkpoints clipkit knows by name: what each one is (family, image size, embedding
//! size, parameters, languages), how well it is published to do (ImageNet zero-shot top-1,
//! with where that number comes from), and how fast it ran here ([`measured`], the results
//! `clipkit bench` recorded on this machine).
//!
//! The table is data, not a gate: any checkpoint directory or hub id of a supported family
//! loads whether it is listed or not. It exists so that a user choosing a model can compare
//! speed and accuracy in one place, and so that the numbers quoted in the documentation have
//! one home with their sources.

mod catalogue;
mod known;
pub mod measured;

pub use catalogue::CATALOGUE;
pub use known::{Architecture, KnownModel, Languages, Source, ZeroShot};

/// One row of `clipkit models`: a catalogued checkpoint, or one that was only benchmarked
/// here (a local directory, a hub id outside the catalogue), with its latest measurement on
/// this CPU.
#[derive(Debug, Clone, Copy)]
pub struct Listing<'a> {
    /// The hub id, or the model as `clipkit bench` was given it.
    pub id: &'a str,
    pub known: Option<&'static KnownModel>,
    pub measured: Option<&'a measured::BenchRecord>,
}

/// The catalogue in order, each with its latest measurement on `cpu` (see
/// [`measured::latest`]), then the other models measured on `cpu`, in the order they were
/// first benchmarked.
pub fn listing<'a>(records: &'a [measured::BenchRecord], cpu: &str) -> Vec<Listing<'a>> {
    let mut rows: Vec<Listing<'a>> = CATALOGUE
        .iter()
        .map(|m| Listing {
            id: m.id,
            known: Some(m),
            measured: measured::latest(records, m.id, cpu),
        })
        .collect();
    for r in records.iter().filter(|r| r.cpu == cpu) {
        let seen = rows.iter().any(|row| row.id.eq_ignore_ascii_case(&r.model));
        if !seen {
            rows.push(Listing {
                id: &r.model,
                known: None,
                measured: measured::latest(records, &r.model, cpu),
            });
        }
    }
    rows
}

/// The known checkpoint with this hub id (compared without regard to case, as the Hub does).
pub fn find(id: &str) -> Option<&'static KnownModel> {
    CATALOGUE.iter().find(|m| m.id.eq_ignore_ascii_case(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_hub_ids_and_numbers_are_plausible() {
        let mut ids: Vec<String> = CATALOGUE.iter().map(|m| m.id.to_lowercase()).collect();
        ids.sort();
        let before = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), before, "a hub id is listed twice");
        for m in CATALOGUE {
            assert_eq!(m.id.split('/').count(), 2, "{}: not owner/name", m.id);
            assert!((64..=1024).contains(&m.image_size), "{}", m.id);
            assert!((256..=2048).contains(&m.embedding_dim), "{}", m.id);
            if let Some(z) = m.imagenet {
                assert!(z.top1 > 30.0 && z.top1 < 90.0, "{}: {}", m.id, z.top1);
            }
            if let Some(p) = m.params_m {
                assert!(p > 50.0 && p < 5000.0, "{}: {p}", m.id);
            }
        }
    }

    #[test]
    fn every_family_the_issue_names_is_covered() {
        for arch in [
            Architecture::Clip,
            Architecture::Siglip,
            Architecture::OpenClip,
            Architecture::OpenClipXlmRoberta,
            Architecture::MClip,
        ] {
            assert!(CATALOGUE.iter().any(|m| m.architecture == arch), "{arch:?}");
        }
        assert!(CATALOGUE
            .iter()
            .any(|m| m.languages == Languages::Multilingual));
    }

    #[test]
    fn listing_joins_this_cpus_measurements_and_adds_unlisted_models() {
        let record = |model: &str, cpu: &str| measured::BenchRecord {
            model: model.into(),
            cpu: cpu.into(),
            precision: "f32".into(),
            batch: 8,
            threads: 2,
            images_per_sec: 5.0,
            date: "2026-01-01T00:00:00Z".into(),
            family: Some("CLIP".into()),
            image_size: Some(224),
            embedding_dim: Some(512),
        };
        let records = vec![
            record("openai/clip-vit-base-patch32", "here"),
            record("/models/mine", "here"),
            record("/models/elsewhere", "there"),
            record("/models/mine", "here"),
        ];
        let rows = listing(&records, "here");
        assert_eq!(rows.len(), CATALOGUE.len() + 1);
        assert!(rows[0].measured.is_some(), "{:?}", rows[0].id);
        assert!(rows[1..CATALOGUE.len()]
            .iter()
            .all(|r| r.measured.is_none()));
        let extra = rows.last().unwrap();
        assert_eq!((extra.id, extra.known.is_none()), ("/models/mine", true));
        assert!(extra.measured.is_some());
    }

    #[test]
    fn lookup_ignores_case() {
        let m = find("OpenAI/CLIP-ViT-Base-Patch32").expect("listed");
        assert_eq!(m.id, "openai/clip-vit-base-patch32");
        assert_eq!(m.embedding_dim, 512);
        assert!(find("nobody/nothing").is_none());
    }
}
