//! open_clip's state-dict names for the tensors of transformers' `CLIPModel`.
//!
//! open_clip's `CLIP` is the same network as transformers' CLIP (transformers' own conversion
//! script maps one onto the other), stored differently: attention keeps q, k and v fused in
//! `in_proj_weight` (`[3·width, width]`, q rows first), the projections are matrices applied
//! as `x @ proj` (`[width, embed_dim]`, the transpose of a `Linear` weight), and the layers are
//! `resblocks` with `ln_1`/`mlp.c_fc`/… leaves. Mapping names (instead of a second copy of the
//! towers) keeps one model implementation for both formats, so a hub repo that ships both gives
//! the same numbers from either.

use crate::weights::{Naming, Stored, View};

/// The naming for an open_clip checkpoint; `text_prefix` is `""` for `CLIP` (text tower at the
/// root) and `"text."` for `CustomTextCLIP`.
pub fn naming(text_prefix: &'static str) -> Naming {
    Box::new(move |name: &str| map(name, text_prefix))
}

fn stored(name: String, view: View) -> Stored {
    Stored { name, view }
}

/// The open_clip tensor holding transformers' `name`. Names it does not know map to themselves,
/// so a missing tensor is reported under the name the model asked for.
pub fn map(name: &str, text_prefix: &str) -> Stored {
    let whole = |n: String| stored(n, View::Whole);
    if let Some(rest) = name.strip_prefix("vision_model.") {
        let mapped = match rest {
            "embeddings.patch_embedding.weight" => "visual.conv1.weight".to_string(),
            "embeddings.class_embedding" => "visual.class_embedding".to_string(),
            "embeddings.position_embedding.weight" => "visual.positional_embedding".to_string(),
            _ => {
                if let Some(leaf) = rest.strip_prefix("pre_layrnorm.") {
                    format!("visual.ln_pre.{leaf}")
                } else if let Some(leaf) = rest.strip_prefix("post_layernorm.") {
                    format!("visual.ln_post.{leaf}")
                } else if let Some(layer) = rest.strip_prefix("encoder.") {
                    return encoder_layer(layer, "visual.transformer.")
                        .unwrap_or_else(|| whole(name.to_string()));
                } else {
                    return whole(name.to_string());
                }
            }
        };
        return whole(mapped);
    }
    if let Some(rest) = name.strip_prefix("text_model.") {
        let mapped = match rest {
            "embeddings.token_embedding.weight" => format!("{text_prefix}token_embedding.weight"),
            "embeddings.position_embedding.weight" => format!("{text_prefix}positional_embedding"),
            _ => {
                if let Some(leaf) = rest.strip_prefix("final_layer_norm.") {
                    format!("{text_prefix}ln_final.{leaf}")
                } else if let Some(layer) = rest.strip_prefix("encoder.") {
                    return encoder_layer(layer, &format!("{text_prefix}transformer."))
                        .unwrap_or_else(|| whole(name.to_string()));
                } else {
                    return whole(name.to_string());
                }
            }
        };
        return whole(mapped);
    }
    match name {
        "visual_projection.weight" => stored("visual.proj".into(), View::Transposed),
        "text_projection.weight" => {
            stored(format!("{text_prefix}text_projection"), View::Transposed)
        }
        _ => whole(name.to_string()),
    }
}

/// `layers.N.<leaf>` of an encoder → `resblocks.N.<open_clip leaf>` under `prefix`.
fn encoder_layer(rest: &str, prefix: &str) -> Option<Stored> {
    let rest = rest.strip_prefix("layers.")?;
    let (index, leaf) = rest.split_once('.')?;
    let block = format!("{prefix}resblocks.{index}");
    let (module, param) = leaf.rsplit_once('.')?;
    let qkv = |i: usize| {
        Some(stored(
            format!("{block}.attn.in_proj_{param}"),
            View::Rows { index: i, count: 3 },
        ))
    };
    let renamed = match module {
        "self_attn.q_proj" => return qkv(0),
        "self_attn.k_proj" => return qkv(1),
        "self_attn.v_proj" => return qkv(2),
        "self_attn.out_proj" => "attn.out_proj",
        "layer_norm1" => "ln_1",
        "layer_norm2" => "ln_2",
        "mlp.fc1" => "mlp.c_fc",
        "mlp.fc2" => "mlp.c_proj",
        _ => return None,
    };
    Some(stored(format!("{block}.{renamed}.{param}"), View::Whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transformers_names_map_to_open_clip_ones() {
        let m = |n: &str| map(n, "");
        assert_eq!(
            m("vision_model.encoder.layers.3.self_attn.k_proj.weight"),
            stored(
                "visual.transformer.resblocks.3.attn.in_proj_weight".into(),
                View::Rows { index: 1, count: 3 }
            )
        );
        assert_eq!(
            m("text_model.encoder.layers.0.mlp.fc2.bias").name,
            "transformer.resblocks.0.mlp.c_proj.bias"
        );
        assert_eq!(
            m("text_model.embeddings.position_embedding.weight").name,
            "positional_embedding"
        );
        assert_eq!(
            m("visual_projection.weight"),
            stored("visual.proj".into(), View::Transposed)
        );
        assert_eq!(
            map("text_projection.weight", "text.").name,
            "text.text_projection"
        );
        assert_eq!(m("logit_scale").name, "logit_scale");
        assert_eq!(
            m("vision_model.pre_layrnorm.bias").name,
            "visual.ln_pre.bias"
        );
    }
}
