//! The `models` capability through the daemon: the bundled handlers on the
//! host's static model, and a hostile tenant (`modelhog`) refused a model it
//! was not granted and stopped at its deadline while other tasks run on.

use crate::support::{Daemon, Dirs, HealthWatch, error_kind, error_message};
use anyhow::Result;
use serde_json::json;
use std::time::Duration;

const STATIC: &str = "all-minilm-l6-v2-static";

#[tokio::test(flavor = "multi_thread")]
async fn embed_and_rag_answer_with_the_hosts_static_model() -> Result<()> {
    let dirs = Dirs::new()?;
    let manifest = |category: &str| {
        format!(
            "category = \"{category}\"\n[capabilities]\nvectors = [\"*\"]\nmodels = [\"{STATIC}\"]\n\
             [config]\nembedder = \"{STATIC}\"\n"
        )
    };
    dirs.install_handler("embed", &manifest("embedding"))?;
    dirs.install_handler("rag", &manifest("rag"))?;
    let daemon = Daemon::start(&dirs).await?;
    let faq = [
        (
            "shipping",
            "Orders ship within two days; delivery takes three to five days.",
        ),
        (
            "returns",
            "Returns are accepted within thirty days; refunds go to the original card.",
        ),
        (
            "warranty",
            "Frames carry a ten year warranty against defects.",
        ),
        (
            "password",
            "To reset your password, use the link on the sign-in page.",
        ),
        (
            "hours",
            "Our shops open at nine in the morning and close at six in the evening.",
        ),
        ("payment", "We take Visa, Mastercard and PayPal."),
    ];
    let documents: Vec<_> = faq
        .iter()
        .map(|(id, text)| json!({ "id": id, "text": text, "metadata": { "url": format!("https://acme.test/{id}") } }))
        .collect();
    let stored = daemon
        .run(
            "embed",
            json!({ "collection": "faq", "documents": documents }),
        )
        .await?;
    assert_eq!(stored["status"], "succeeded", "{stored}");
    assert_eq!(stored["result"]["model"], STATIC, "{stored}");
    // No word of these questions is in the answer's passage, and the
    // hashed `local` embedder ranks another passage first for each: only
    // the model's sense of meaning finds them.
    for (question, page) in [
        ("I forgot my login credentials", "password"),
        ("How long is the guarantee on bikes?", "warranty"),
    ] {
        let answer = daemon
            .run(
                "rag",
                json!({ "query": question, "collection": "faq", "k": 1 }),
            )
            .await?;
        assert_eq!(answer["status"], "succeeded", "{answer}");
        assert_eq!(
            answer["result"]["citations"][0]["url"],
            format!("https://acme.test/{page}"),
            "{question}: {answer}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_uses_only_its_granted_models_and_its_deadline_stops_its_embedding() -> Result<()>
{
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    dirs.write(
        "modelhog.toml",
        format!("[capabilities]\nmodels = [\"{STATIC}\", \"all-minilm-l6-v2\"]\n").as_bytes(),
    )?;
    dirs.install("modelhog", "modelhog")?;
    let daemon = Daemon::start(&dirs).await?;
    let health = HealthWatch::start(&daemon);

    let granted = daemon
        .run("modelhog", json!({ "model": STATIC, "texts": 3 }))
        .await?;
    assert_eq!(granted["status"], "succeeded", "{granted}");
    assert_eq!(granted["result"]["vectors"], 3, "{granted}");
    assert_eq!(granted["result"]["dim"], 384, "{granted}");

    for model in ["potion-base-8m", "../all-minilm-l6-v2", "*"] {
        let refused = daemon.run("modelhog", json!({ "model": model })).await?;
        assert_eq!(refused["status"], "failed", "{refused}");
        let message = error_message(&refused);
        assert!(
            message.contains("not granted") && message.contains("modelhog.toml"),
            "{model}: {message}"
        );
    }

    // The encoder without end, on long texts: the host stops it at the
    // attempt's deadline (between slices of its work), while echo tasks
    // submitted meanwhile all succeed.
    let (status, hog) = daemon
        .request(
            reqwest::Method::POST,
            "/api/v1/tasks",
            Some(json!({ "kind": "modelhog", "timeout_s": 2, "max_retries": 0,
                         "payload": { "model": "all-minilm-l6-v2", "texts": 64, "words": 200, "forever": true } })),
        )
        .await?;
    anyhow::ensure!(status == 202, "{hog}");
    let hog_id = hog["task_id"].as_str().unwrap_or_default().to_string();
    let mut echoes = Vec::new();
    for i in 0..20 {
        echoes.push(daemon.submit("echo", json!({ "n": i })).await?);
    }
    for id in echoes {
        let task = daemon.wait(&id).await?;
        assert_eq!(task["status"], "succeeded", "{task}");
    }
    let hog = daemon.wait(&hog_id).await?;
    assert_eq!(hog["status"], "failed", "{hog}");
    let (kind, message) = (error_kind(&hog), error_message(&hog));
    assert!(
        kind == "timeout" || message.contains("time ran out"),
        "{kind}: {message}"
    );
    health.finish(Duration::from_secs(2)).await?;
    Ok(())
}
