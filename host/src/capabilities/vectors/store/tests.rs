use super::*;

fn point(id: &str, v: &[f32]) -> NewPoint {
    NewPoint {
        id: id.into(),
        vector: v.to_vec(),
        metadata: format!("{{\"id\":\"{id}\"}}"),
        text: None,
    }
}

#[test]
fn points_survive_a_reopen_and_deletes_stay_deleted() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("vectors.db");
    {
        let store = VectorStore::open(&path, VectorConfig::default())?;
        store
            .upsert(
                "docs",
                vec![point("a", &[1.0, 0.0]), point("b", &[0.0, 2.0])],
            )
            .map_err(|e| e.to_string())?;
        store
            .delete("docs", &["a".into(), "zz".into()])
            .map_err(|e| e.to_string())?;
    }
    let store = VectorStore::open(&path, VectorConfig::default())?;
    assert_eq!(store.count("docs").map_err(|e| e.to_string())?, 1);
    let hits = store
        .query("docs", &[0.0, 1.0], 5)
        .map_err(|e| e.to_string())?;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "b");
    assert!((hits[0].score - 1.0).abs() < 1e-6);
    assert!(store.used_bytes() > 0);
    Ok(())
}

#[test]
fn wrong_dimension_bad_metadata_and_the_memory_bound_are_refused() {
    let store = VectorStore::in_memory(VectorConfig {
        max_mb: 1,
        max_dim: 8,
        ..VectorConfig::default()
    });
    assert_eq!(store.upsert("c", vec![point("a", &[1.0, 0.0])]), Ok(1));
    let wrong = store.upsert("c", vec![point("b", &[1.0, 0.0, 0.0])]);
    assert!(matches!(wrong, Err(VectorError::Invalid(m)) if m.contains("2")));
    let mut bad = point("m", &[1.0, 1.0]);
    bad.metadata = "not json".into();
    assert!(matches!(
        store.upsert("c", vec![bad]),
        Err(VectorError::Invalid(_))
    ));
    assert!(matches!(
        store.upsert("c", vec![point("z", &[0.0, 0.0])]),
        Err(VectorError::Invalid(_))
    ));
    assert!(matches!(
        store.upsert("bad name!", vec![point("a", &[1.0])]),
        Err(VectorError::Invalid(_))
    ));
    // 1 MiB holds a few thousand 8-dimension points, not 10 000.
    let many: Vec<NewPoint> = (0..10_000)
        .map(|i| point(&format!("p{i}"), &[1.0; 8]))
        .collect();
    let full = store.upsert("big", many);
    assert!(matches!(full, Err(VectorError::Full(m)) if m.contains("max_mb")));
    assert_eq!(store.count("big"), Ok(0));
    assert_eq!(store.count("c"), Ok(1));
}

#[test]
fn a_namespace_quota_counts_its_own_collections_only() {
    let store = VectorStore::in_memory(VectorConfig::default());
    let quota = Quota {
        namespace: "squat".into(),
        max_points: 3,
        max_bytes: 1 << 20,
        setting: "[limits] in squat.toml".into(),
    };
    let points = |ids: &[&str]| {
        ids.iter()
            .map(|i| point(i, &[1.0, 2.0]))
            .collect::<Vec<_>>()
    };
    // Shared collections and other namespaces do not count.
    assert_eq!(
        store.upsert("brand-x", points(&["a", "b", "c", "d"])),
        Ok(4)
    );
    assert_eq!(store.upsert("squatter:x", points(&["a", "b", "c"])), Ok(3));
    assert_eq!(
        store.upsert_within("squat:one", points(&["a", "b"]), Some(&quota)),
        Ok(2)
    );
    // Replacing points adds none; one more fits in another collection.
    assert_eq!(
        store.upsert_within("squat:one", points(&["a", "b"]), Some(&quota)),
        Ok(2)
    );
    assert_eq!(
        store.upsert_within("squat:two", points(&["a"]), Some(&quota)),
        Ok(1)
    );
    let over = store.upsert_within("squat:two", points(&["b"]), Some(&quota));
    assert!(
        matches!(&over, Err(VectorError::Full(m)) if m.contains("vector_points") && m.contains("squat.toml")),
        "{over:?}"
    );
    assert_eq!(store.usage("squat").points, 3);
    assert_eq!(store.count("squat:two"), Ok(1));
    // The bytes quota: a few KiB of points is refused with the setting.
    let small = Quota {
        max_points: 1_000_000,
        max_bytes: 4096,
        ..quota
    };
    let many: Vec<NewPoint> = (0..200)
        .map(|i| point(&format!("p{i}"), &[1.0; 8]))
        .collect();
    let over = store.upsert_within("squat:three", many, Some(&small));
    assert!(
        matches!(&over, Err(VectorError::Full(m)) if m.contains("vector_mb")),
        "{over:?}"
    );
    assert_eq!(store.count("squat:three"), Ok(0));
    // What is held is what the collections really allocated.
    let held = store.usage("squat").bytes;
    assert!((3 * (2 * 4 + 32)..64 * 1024).contains(&held), "{held}");
}

fn passage(id: &str, v: &[f32], text: &str) -> NewPoint {
    NewPoint {
        text: Some(text.into()),
        ..point(id, v)
    }
}

#[test]
fn a_replaced_document_loses_its_old_tail_and_its_texts_are_searched_after_a_reopen()
-> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("vectors.db");
    let e = |e: VectorError| e.to_string();
    {
        let store = VectorStore::open(&path, VectorConfig::default())?;
        let long = vec![
            passage("page#0", &[1.0, 0.0], "json encoder and decoder"),
            passage("page#1", &[0.9, 0.1], "dumps serialises an object"),
            passage("page#2", &[0.8, 0.2], "old trailing passage about pickles"),
        ];
        assert_eq!(store.replace_document("docs", "page", long, None), Ok(0));
        store
            .replace_document(
                "docs",
                "other",
                vec![passage("other#0", &[0.0, 1.0], "csv files")],
                None,
            )
            .map_err(e)?;
        // The page shrank to two passages: the third goes.
        let short = vec![
            passage("page#0", &[1.0, 0.0], "json encoder and decoder"),
            passage("page#1", &[0.9, 0.1], "dumps serialises an object"),
        ];
        assert_eq!(store.replace_document("docs", "page", short, None), Ok(1));
    }
    let store = VectorStore::open(&path, VectorConfig::default())?;
    assert_eq!(store.count("docs").map_err(e)?, 3);
    let hits = store.search("docs", &[], "pickles", 5).map_err(e)?;
    assert!(
        hits.is_empty(),
        "the deleted passage's text is gone: {hits:?}"
    );
    // Text alone, vector alone, and both: the term decides a tie of the
    // vectors, the vector finds what shares no term.
    let by_text = store
        .search("docs", &[], "serialising objects", 5)
        .map_err(e)?;
    assert_eq!(by_text[0].id, "page#1");
    let by_vector = store.search("docs", &[0.0, 1.0], "", 5).map_err(e)?;
    assert_eq!(by_vector[0].id, "other#0");
    let both = store.search("docs", &[0.0, 1.0], "csv", 5).map_err(e)?;
    assert_eq!(both[0].id, "other#0");
    assert!(both[0].score > both[1].score);
    // An empty replacement removes the document; it survives nothing.
    assert_eq!(
        store.replace_document("docs", "page", Vec::new(), None),
        Ok(2)
    );
    assert_eq!(store.count("docs").map_err(e)?, 1);
    assert!(
        store.search("docs", &[1.0], "x", 5).is_err(),
        "wrong dimension"
    );
    Ok(())
}

#[test]
fn the_text_index_is_counted_in_the_memory_the_store_reports() -> Result<(), String> {
    let store = VectorStore::in_memory(VectorConfig::default());
    let plain: Vec<NewPoint> = (0..200)
        .map(|i| point(&format!("a{i}"), &[1.0, i as f32]))
        .collect();
    store.upsert("plain", plain).map_err(|e| e.to_string())?;
    let without = store.used_bytes();
    let words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda";
    let texts: Vec<NewPoint> = (0..200)
        .map(|i| {
            passage(
                &format!("a{i}"),
                &[1.0, i as f32],
                &format!("{words} word{i}"),
            )
        })
        .collect();
    store
        .replace_document("texts", "d", texts, None)
        .map_err(|e| e.to_string())?;
    assert!(
        store.used_bytes() > 2 * without,
        "{} vs {without}",
        store.used_bytes()
    );
    Ok(())
}

#[test]
fn points_are_read_back_by_id_in_order() -> Result<(), String> {
    let store = VectorStore::in_memory(VectorConfig::default());
    store
        .upsert(
            "docs",
            vec![point("a", &[1.0, 0.0]), point("b", &[0.0, 1.0])],
        )
        .map_err(|e| e.to_string())?;
    let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let got = store
        .get("docs", &ids(&["b", "zz", "a"]))
        .map_err(|e| e.to_string())?;
    assert_eq!(
        got,
        vec![
            Some("{\"id\":\"b\"}".to_string()),
            None,
            Some("{\"id\":\"a\"}".to_string())
        ]
    );
    assert_eq!(store.get("nothing", &ids(&["a"])), Ok(vec![None]));
    let many = vec!["x".to_string(); MAX_K + 1];
    assert!(matches!(
        store.get("docs", &many),
        Err(VectorError::Invalid(_))
    ));
    Ok(())
}
