//! Prompt templates and class names that ship with clipkit: OpenAI's 80 ImageNet templates,
//! the 7-template subset OpenAI found works as well, and the 1,000 curated ImageNet class
//! names (see `data/README.md` for where they come from).

use std::path::Path;

use crate::{EvalError, Result};

const OPENAI_80: &str = include_str!("../data/openai_imagenet_templates.txt");
const OPENAI_7: &str = include_str!("../data/openai_imagenet_templates_7.txt");
const IMAGENET_CLASSNAMES: &str = include_str!("../data/imagenet_classnames.txt");

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// `openai` (80 templates), `openai7`, `none` (the class name alone), or a file with one
/// template per line using `{c}` (or `{}`) for the class name.
pub fn resolve(spec: &str) -> Result<Vec<String>> {
    let templates = match spec {
        "openai" | "openai80" => lines(OPENAI_80),
        "openai7" => lines(OPENAI_7),
        "none" => vec!["{c}".to_string()],
        path => {
            let path = Path::new(path);
            let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let t = lines(&text);
            if t.is_empty() {
                return Err(EvalError::dataset(path, "no templates in the file"));
            }
            t
        }
    };
    for t in &templates {
        clipkit_core::scores::apply_template(t, "x")?;
    }
    Ok(templates)
}

/// OpenAI's curated names for the 1,000 ImageNet-1k classes, in class-index order.
pub fn imagenet_classnames() -> Vec<String> {
    lines(IMAGENET_CLASSNAMES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_lists_have_their_published_sizes() {
        assert_eq!(resolve("openai").unwrap().len(), 80);
        assert_eq!(resolve("openai7").unwrap().len(), 7);
        assert_eq!(imagenet_classnames().len(), 1000);
        assert!(resolve("openai7")
            .unwrap()
            .contains(&"itap of a {c}.".to_string()));
        assert_eq!(imagenet_classnames()[0], "tench");
    }

    #[test]
    fn template_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.txt");
        std::fs::write(&f, "a photo of a {c}\nno placeholder here\n").unwrap();
        assert!(resolve(f.to_str().unwrap())
            .unwrap_err()
            .to_string()
            .contains("placeholder"));
        assert!(resolve("/nonexistent/templates.txt").is_err());
    }
}
