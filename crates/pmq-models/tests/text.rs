//! TextTokenizer: padding configured in tokenizer.json is switched off, truncation uses the
//! caller's max length, batches carry the attention mask.

use pmq_models::TextTokenizer;
use serde_json::json;

fn tokenizer_json() -> serde_json::Value {
    let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [], "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]")],
            "pair": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]"),
                     {"Sequence": {"id": "B", "type_id": 1}}, special("[SEP]")],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [2], "tokens": ["[SEP]"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "[UNK]",
                  "vocab": {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3, "hello": 4,
                            "world": 5, "a": 6, "b": 7}}
    })
}

#[test]
fn tokenizer_disables_padding_and_truncates_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, tokenizer_json().to_string()).unwrap();
    let tok = TextTokenizer::from_file(&path, 5).unwrap();
    assert_eq!(tok.pad_id(), 0);
    let ids = tok.encode(&["hello world", "a b a b a b", "zzz"]).unwrap();
    assert_eq!(
        ids,
        vec![vec![1, 4, 5, 2], vec![1, 6, 7, 6, 2], vec![1, 3, 2]]
    );
    let batch = tok.batch(&["hello world", "a b a b a b", "zzz"]).unwrap();
    let mask: Vec<Vec<u32>> = batch.attention_mask.unwrap().to_vec2().unwrap();
    assert_eq!(
        mask,
        vec![
            vec![1, 1, 1, 1, 0],
            vec![1, 1, 1, 1, 1],
            vec![1, 1, 1, 0, 0]
        ]
    );
    let ids: Vec<Vec<u32>> = batch.input_ids.unwrap().to_vec2().unwrap();
    assert_eq!(ids[2], vec![1, 3, 2, 0, 0]);
    assert_eq!(tok.decode(&[4, 5], true).unwrap(), "hello world");

    let err = TextTokenizer::from_file(&dir.path().join("missing.json"), 8)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.json"), "{err}");
    std::fs::write(&path, "{not json").unwrap();
    let err = TextTokenizer::from_file(&path, 8).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}
