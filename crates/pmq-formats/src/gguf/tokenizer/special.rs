//! gguf-py's `SpecialVocab`: special token ids, `add_*_token` flags, merges, the chat template
//! and the lower-casing flag, from `tokenizer.json`, `tokenizer_config.json` and `config.json`.
//!
//! Ids come from `tokenizer_config.json`'s `<type>_token` (matched against `added_tokens`),
//! then from `config.json`'s `<type>_token_id`; the first found wins. Without a `bos_token`
//! the `cls_token` is the BOS, without an `eos_token` the `sep_token` the EOS. The post
//! processor decides `add_bos/eos/sep_token` as gguf-py's crude parse of `TemplateProcessing`
//! and `RobertaProcessing` does; `tokenizer_config.json`'s `add_<type>_token` overrides it.
//! `cls` has no GGUF key (gguf-py skips it too).

use crate::gguf::metadata::Metadata;
use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;
use std::path::Path;

pub(super) struct SpecialVocab {
    merges: Vec<String>,
    ids: Vec<(String, u32)>,
    add: Vec<(String, bool)>,
    chat_template: Option<String>,
    lowercase: bool,
}

/// `<type>_token` of tokenizer_config.json as a string (plain or `{"content": …}`).
fn token_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

fn special_id(step: &Json) -> Option<String> {
    step["SpecialToken"]["id"].as_str().map(str::to_string)
}

fn lowercases(norm: &Json) -> bool {
    match norm["type"].as_str() {
        Some("Lowercase") => true,
        Some("BertNormalizer") => norm["lowercase"].as_bool().unwrap_or(true),
        Some("Sequence") => norm["normalizers"]
            .as_array()
            .is_some_and(|ns| ns.iter().any(lowercases)),
        _ => false,
    }
}

impl SpecialVocab {
    fn set_add(&mut self, typ: &str, v: bool) {
        match self.add.iter_mut().find(|(t, _)| t == typ) {
            Some(e) => e.1 = v,
            None => self.add.push((typ.to_string(), v)),
        }
    }

    fn set_id(&mut self, typ: &str, id: Option<u64>, n_vocab: Option<usize>) {
        let Some(id) = id else { return };
        let in_range = n_vocab.is_none_or(|n| (id as usize) < n);
        if in_range && !self.ids.iter().any(|(t, _)| t == typ) {
            self.ids.push((typ.to_string(), id as u32));
        }
    }

    pub(super) fn load(
        tok: &Json,
        tc: Option<&Json>,
        config: &Json,
        root: &Path,
        n_vocab: Option<usize>,
        load_merges: bool,
    ) -> Self {
        let mut s = SpecialVocab {
            merges: Vec::new(),
            ids: Vec::new(),
            add: Vec::new(),
            chat_template: None,
            lowercase: lowercases(&tok["normalizer"]),
        };
        if load_merges {
            s.merges = merges(&tok["model"]["merges"]);
        }
        let mut types: Vec<&str> = vec!["bos", "eos", "unk", "sep", "pad", "cls", "mask"];
        let mut tc = tc.cloned();
        let get = |tc: &Option<Json>, k: &str| tc.as_ref().and_then(|t| token_text(&t[k]));
        let mut bos = get(&tc, "bos_token");
        let cls = get(&tc, "cls_token");
        let mut eos = get(&tc, "eos_token");
        let sep = get(&tc, "sep_token");
        if let Some(t) = tc.as_mut().and_then(Json::as_object_mut) {
            if bos.is_none() && cls.is_some() {
                bos = cls.clone();
                t.insert("bos_token".into(), Json::from(bos.clone()));
            }
            if eos.is_none() && sep.is_some() {
                eos = sep.clone();
                t.insert("eos_token".into(), Json::from(eos.clone()));
            }
        }
        let post = &tok["post_processor"];
        let processors: Vec<&Json> = match post["processors"].as_array() {
            Some(ps) => ps.iter().collect(),
            None if !post.is_null() => vec![post],
            None => vec![],
        };
        for p in processors {
            match p["type"].as_str() {
                Some("RobertaProcessing") => {
                    for t in ["bos", "eos", "sep"] {
                        s.set_add(t, true);
                    }
                }
                Some("TemplateProcessing") => {
                    let single = p["single"].as_array().cloned().unwrap_or_default();
                    let pair = p["pair"].as_array().cloned().unwrap_or_default();
                    let mut first = None;
                    let mut last = None;
                    if single.len() > 1 {
                        first = special_id(&single[0]);
                        if let Some(f) = &first {
                            if tc.is_none() {
                                bos = Some(f.clone());
                            }
                            s.set_add("bos", Some(f) == bos.as_ref() || Some(f) == cls.as_ref());
                        }
                        last = special_id(&single[single.len() - 1]);
                        if let Some(l) = &last {
                            if tc.is_none() {
                                eos = Some(l.clone());
                            } else if Some(l) != eos.as_ref() {
                                let extra = if !types.contains(&"eot") {
                                    "eot"
                                } else {
                                    "eom"
                                };
                                types.push(extra);
                                if let Some(t) = tc.as_mut().and_then(Json::as_object_mut) {
                                    t.insert(format!("{extra}_token"), Json::from(eos.clone()));
                                    t.insert("eos_token".into(), Json::from(l.clone()));
                                }
                                eos = Some(l.clone());
                            }
                            s.set_add("eos", Some(l) == eos.as_ref());
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(first.is_some() && special_id(&pair[0]) == first);
                        let stop = if last.is_some() && special_id(&pair[pair.len() - 1]) == last {
                            pair.len() - 1
                        } else {
                            pair.len()
                        };
                        let body = pair.get(start..stop.max(start)).unwrap_or(&[]);
                        let seq = |v: &Json| v["Sequence"]["id"].as_str().map(str::to_string);
                        if body.len() > 2
                            && seq(&body[0]).as_deref() == Some("A")
                            && seq(&body[body.len() - 1]).as_deref() == Some("B")
                        {
                            let mid = &body[1..body.len() - 1];
                            let is_sep = |v: &Json| {
                                special_id(v).is_some_and(|e| {
                                    Some(&e) == sep.as_ref() || Some(&e) == eos.as_ref()
                                })
                            };
                            let mut add_sep = is_sep(&mid[0]) && last.is_none();
                            if mid.len() == 2 && is_sep(&mid[1]) {
                                add_sep = true;
                            }
                            s.set_add("sep", add_sep);
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(tc) = &tc {
            s.chat_template = tc["chat_template"]
                .as_str()
                .map(str::to_string)
                .or_else(|| std::fs::read_to_string(root.join("chat_template.jinja")).ok());
            let added = tok["added_tokens"].as_array().cloned().unwrap_or_default();
            for typ in &types {
                if let Some(b) = tc[format!("add_{typ}_token")].as_bool() {
                    s.set_add(typ, b);
                }
                let Some(text) = token_text(&tc[format!("{typ}_token")]) else {
                    continue;
                };
                let id = added
                    .iter()
                    .find(|a| a["content"].as_str() == Some(&text))
                    .and_then(|a| a["id"].as_u64());
                s.set_id(typ, id, n_vocab);
            }
        }
        for typ in &types {
            s.set_id(typ, config[format!("{typ}_token_id")].as_u64(), n_vocab);
        }
        s
    }

    /// Appends the keys as `SpecialVocab.add_to_gguf` does (types without a GGUF key skipped).
    pub(super) fn add_to(self, md: &mut Metadata) {
        if !self.merges.is_empty() {
            md.push((
                "tokenizer.ggml.merges".into(),
                Value::Array(self.merges.into_iter().map(Value::String).collect()),
            ));
        }
        for (typ, id) in self.ids {
            let key = match typ.as_str() {
                "bos" => "bos_token_id",
                "eos" => "eos_token_id",
                "eot" => "eot_token_id",
                "eom" => "eom_token_id",
                "unk" => "unknown_token_id",
                "sep" => "seperator_token_id",
                "pad" => "padding_token_id",
                "mask" => "mask_token_id",
                _ => continue,
            };
            md.push((format!("tokenizer.ggml.{key}"), Value::U32(id)));
        }
        for (typ, v) in self.add {
            if matches!(typ.as_str(), "bos" | "eos" | "sep") {
                md.push((format!("tokenizer.ggml.add_{typ}_token"), Value::Bool(v)));
            }
        }
        if let Some(t) = self.chat_template {
            md.push(("tokenizer.chat_template".into(), Value::String(t)));
        }
        if self.lowercase {
            md.push((
                "tokenizer.ggml.normalizer.lowercase".into(),
                Value::Bool(true),
            ));
        }
    }
}

/// `model.merges` as `"a b"` strings; the pair form (transformers ≥ 4.45) with spaces inside a
/// part encoded as U+0120, as gguf-py does.
fn merges(m: &Json) -> Vec<String> {
    let Some(list) = m.as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| match e {
            Json::String(s) => Some(s.clone()),
            Json::Array(pair) if pair.len() == 2 => {
                let enc = |v: &Json| v.as_str().map(|s| s.replace(' ', "\u{120}"));
                Some(format!("{} {}", enc(&pair[0])?, enc(&pair[1])?))
            }
            _ => None,
        })
        .collect()
}
