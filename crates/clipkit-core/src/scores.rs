//! The scoring primitives under their first path: everything here lives in [`crate::scoring`],
//! which also holds the family scoring head and the classify / similarity functions.

pub use crate::scoring::{apply_template, dot, ensemble, logits, normalize, softmax, top_k};
